"""Training on JAX's distributed runtime: 2 processes on localhost, CPU collectives (gloo)."""

import os
import sys

import numpy as np
import pytest
from _processes import run_two_processes
from _training import global_batch, train

WORKER = os.path.join(os.path.dirname(__file__), "_distributed_worker.py")


def test_two_processes_train_the_same_sharded_model_as_one(tmp_path):
    results = run_two_processes(WORKER, tmp_path)
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
