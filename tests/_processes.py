"""Running a worker script in 2 processes on localhost (jax.distributed, gloo)."""

import os
import socket
import subprocess
import sys

import numpy as np


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(worker, tmp_path, extra=()):
    """Run ``worker PROCESS_ID 2 PORT OUT.npz *extra`` twice; returns each OUT as a dict.

    The workers set their own device counts, so the test process's XLA_FLAGS and
    JAX_PLATFORMS are not passed on. A failing worker fails the test with its log.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    outs = [tmp_path / f"process{i}.npz" for i in range(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, worker, str(i), "2", str(port), str(out), *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i, out in enumerate(outs)
    ]
    logs = []
    try:
        for process in workers:
            stdout, _ = process.communicate(timeout=240)
            logs.append(stdout.decode(errors="replace")[-3000:])
    finally:
        for process in workers:
            process.kill()
    for process, log in zip(workers, logs, strict=True):
        assert process.returncode == 0, log
    return [dict(np.load(out)) for out in outs]
