"""jv.random: a stream held in a variable (API.md section 6)."""

import threading

import jax
import jax.numpy as jnp
import numpy as np

import jaxvars as jv


def test_a_fixed_seed_gives_the_same_draws():
    jv.random.set_seed(42)
    first = [jv.random.normal((3,)), jv.random.uniform((3,)), jv.random.next_key()]
    jv.random.set_seed(42)
    second = [jv.random.normal((3,)), jv.random.uniform((3,)), jv.random.next_key()]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_every_draw_advances_the_stream():
    keys = {tuple(np.asarray(jv.random.next_key()).tolist()) for _ in range(20)}
    assert len(keys) == 20
    assert not np.array_equal(jv.random.normal((4,)), jv.random.normal((4,)))


def test_shapes_dtypes_and_parameters():
    assert jv.random.normal(5).shape == (5,)
    assert jv.random.normal((2, 3), jnp.bfloat16).dtype == jnp.bfloat16
    samples = jv.random.normal((20000,), mean=3.0, stddev=2.0)
    assert float(samples.mean()) == pytest_approx(3.0, 0.05)
    assert float(samples.std()) == pytest_approx(2.0, 0.05)
    u = jv.random.uniform((1000,), minval=-2.0, maxval=-1.0)
    assert float(u.min()) >= -2.0 and float(u.max()) < -1.0


def pytest_approx(value, tolerance):
    import pytest

    return pytest.approx(value, abs=tolerance)


def test_the_stream_state_is_a_non_trainable_variable():
    from jaxvars._random import _stream

    _state = _stream()
    assert isinstance(_state, jv.Variable) and _state.trainable is False
    before = _state.value
    jv.random.next_key()
    assert _state.value is not before and _state.dtype == np.uint32


def test_threads_never_draw_the_same_key():
    keys = []

    def worker():
        for _ in range(50):
            keys.append(tuple(np.asarray(jv.random.next_key()).tolist()))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 400


def test_draws_are_ordinary_arrays():
    assert isinstance(jv.random.normal((2,)), jax.Array)
