"""Training on JAX's distributed runtime: 2 processes on localhost, CPU collectives (gloo)."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from _training import global_batch, train

WORKER = os.path.join(os.path.dirname(__file__), "_distributed_worker.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_the_same_sharded_model_as_one(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    outs = [tmp_path / f"process{i}.npz" for i in range(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, WORKER, str(i), "2", str(port), str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i, out in enumerate(outs)
    ]
    logs = []
    try:
        for worker in workers:
            stdout, _ = worker.communicate(timeout=240)
            logs.append(stdout.decode(errors="replace")[-3000:])
    finally:
        for worker in workers:
            worker.kill()
    for worker, log in zip(workers, logs, strict=True):
        assert worker.returncode == 0, log
    results = [dict(np.load(out)) for out in outs]
    assert int(results[0]["devices"]) == 4  # a global mesh over both processes
    x, y = global_batch()
    single_losses, single_variables = train(x, y)
    for result in results:
        np.testing.assert_allclose(result["losses"], single_losses, rtol=1e-5)
        for path, value in single_variables.items():
            np.testing.assert_allclose(result[path], value, rtol=1e-5, atol=1e-6)
    for path in single_variables:
        np.testing.assert_array_equal(results[0][path], results[1][path])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
