"""jaxvars' random stream: a PRNG key held in a variable, split on every draw."""

from __future__ import annotations

import contextvars
from typing import Any

import jax
import jax.numpy as jnp

from . import _trace
from ._errors import JaxvarsValueError
from ._operators import unwrap
from ._variable import Variable

_state: list[Variable] = []


def _stream() -> Variable:
    """The stream's state variable, made on first use (an array made at import time
    would start JAX's backend before the user could configure it).

    Raw uint32 key data (not a typed key), so the state is an ordinary numeric
    variable that assign, checkpoints and jv.jit handle like any other. It
    lives in no store: clearing a store must not reset randomness, and stores
    list only the user's variables.
    """
    if not _state:
        with _trace.STATE_LOCK:
            if not _state:
                # An empty context: no scope prefix, jv.device, sharding rules or
                # open frame applies to it, wherever the first draw happens.
                _state.append(contextvars.Context().run(_new_state))
    return _state[0]


def key_variable() -> Variable:
    """The random stream's state: a non-trainable uint32 Variable (a raw PRNG key).

    Put it in a checkpoint target to resume with exactly the draws an
    uninterrupted run would make; assigning it (``jv.restore`` does) moves
    the stream.

    Example:
        >>> import jaxvars as jv
        >>> jv.random.set_seed(0)
        >>> saved = jv.random.key_variable().numpy()
        >>> a = jv.random.normal((2,))
        >>> _ = jv.random.key_variable().assign(saved)
        >>> bool((jv.random.normal((2,)) == a).all())
        True
    """
    return _stream()


def made_stream() -> list[Variable]:
    """The random stream's state, if a draw made it (never made here: see _stream)."""
    return list(_state)


def is_stream(variable: Variable) -> bool:
    """Whether ``variable`` is the random stream's state."""
    return bool(_state) and variable is _state[0]


def _new_state() -> Variable:
    with jax.ensure_compile_time_eval():  # concrete, even if the first draw is traced
        return Variable(jax.random.PRNGKey(0), name="jaxvars/random_state", trainable=False)


def set_seed(seed: int) -> None:
    """Restart the random stream from ``seed``: same seed, same draws, every run.

    Example:
        >>> import jaxvars as jv
        >>> jv.random.set_seed(1); a = jv.random.normal((2,))
        >>> jv.random.set_seed(1); b = jv.random.normal((2,))
        >>> bool((a == b).all())
        True
    """
    _stream().assign(jax.random.PRNGKey(seed))


def next_key() -> jax.Array:
    """A fresh PRNG key; advances the stream (also inside ``jv.jit``).

    Example:
        >>> import jaxvars as jv
        >>> jv.random.next_key().shape
        (2,)
    """
    state = _stream()
    with _trace.STATE_LOCK:  # two threads (or a thread and a jv.jit step) never draw one key
        state_value, key = jax.random.split(state.value)
        state.assign(state_value)
    for axis_name in _trace.lanes.get():  # inside jv.vmap: each lane its own key
        key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
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


def bernoulli(p: Any = 0.5, shape: tuple[int, ...] | int = ()) -> jax.Array:
    """Booleans, each True with probability ``p`` (``jax.random.bernoulli``), from the
    stream: eagerly, in ``jv.jit``, per lane under ``jv.vmap``, and the same draw when
    ``jv.remat`` recomputes it.

    Example:
        >>> import jaxvars as jv
        >>> jv.random.bernoulli(0.5, (2, 3)).dtype
        dtype('bool')
    """
    return jax.random.bernoulli(next_key(), unwrap(p), _shape(shape))


def dropout(x: Any, rate: Any, *, deterministic: bool = False) -> jax.Array:
    """``x`` with each element zeroed with probability ``rate`` and the rest scaled by
    ``1 / (1 - rate)`` (``tf.nn.dropout``, ``nnx.Dropout``), its mask drawn from the
    stream (see ``bernoulli``); ``x`` itself when ``deterministic`` or ``rate`` is 0.

    Raises:
        ValueError: a ``rate`` outside ``[0, 1)``.

    Example:
        >>> import jax.numpy as jnp, jaxvars as jv
        >>> kept = jv.random.dropout(jnp.ones(1000), 0.5)
        >>> sorted(set(kept.tolist()))
        [0.0, 2.0]
        >>> jv.random.dropout(jnp.ones(3), 0.5, deterministic=True).tolist()
        [1.0, 1.0, 1.0]
    """
    x = jnp.asarray(unwrap(x))
    if isinstance(rate, (int, float)):
        if not 0 <= rate < 1:
            raise JaxvarsValueError(
                f"jv.random.dropout: rate is the probability of dropping an element, in "
                f"[0, 1); got {rate}."
            )
        if rate == 0:
            return x
    if deterministic:
        return x
    keep = bernoulli(1 - unwrap(rate), x.shape)
    return jnp.where(keep, x / (1 - unwrap(rate)), jnp.zeros((), x.dtype))


def _shape(shape: tuple[int, ...] | int) -> tuple[int, ...]:
    return (shape,) if isinstance(shape, int) else tuple(shape)
