"""jaxvars' random stream: a PRNG key held in a variable, split on every draw."""

from __future__ import annotations

import threading
from typing import Any

import jax
import jax.numpy as jnp

from ._variable import Variable

# Raw uint32 key data (not a typed key) so the state is an ordinary numeric
# variable that assign, checkpoints and jv.jit handle like any other. It lives in
# no store: clearing a store must not reset randomness, and stores list only
# the user's variables.
_state = Variable(jax.random.PRNGKey(0), name="jaxvars/random_state", trainable=False)
_draw_lock = threading.Lock()


def set_seed(seed: int) -> None:
    """Restart the random stream from ``seed``: same seed, same draws, every run.

    Example:
        >>> import jaxvars as jv
        >>> jv.random.set_seed(1); a = jv.random.normal((2,))
        >>> jv.random.set_seed(1); b = jv.random.normal((2,))
        >>> bool((a == b).all())
        True
    """
    _state.assign(jax.random.PRNGKey(seed))


def next_key() -> jax.Array:
    """A fresh PRNG key; advances the stream (also inside ``jv.jit``).

    Example:
        >>> import jaxvars as jv
        >>> jv.random.next_key().shape
        (2,)
    """
    with _draw_lock:  # two threads must never draw the same key
        state, key = jax.random.split(_state.value)
        _state.assign(state)
    return key


def normal(
    shape: tuple[int, ...] | int,
    dtype: Any = jnp.float32,
    *,
    mean: float = 0.0,
    stddev: float = 1.0,
) -> jax.Array:
    """Samples from a normal distribution (``tf.random.normal``), from the stream.

    Example:
        >>> import jaxvars as jv
        >>> jv.random.normal((2, 3)).shape
        (2, 3)
    """
    return mean + stddev * jax.random.normal(next_key(), _shape(shape), dtype)


def uniform(
    shape: tuple[int, ...] | int,
    dtype: Any = jnp.float32,
    *,
    minval: float = 0.0,
    maxval: float = 1.0,
) -> jax.Array:
    """Samples uniformly from ``[minval, maxval)`` (``tf.random.uniform``), from the stream.

    Example:
        >>> import jaxvars as jv
        >>> bool((jv.random.uniform((100,)) < 1.0).all())
        True
    """
    return jax.random.uniform(next_key(), _shape(shape), dtype, minval, maxval)


def _shape(shape: tuple[int, ...] | int) -> tuple[int, ...]:
    return (shape,) if isinstance(shape, int) else tuple(shape)
