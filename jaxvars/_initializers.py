"""Initializers of ``get_variable``: the signatures it calls, and the defaults
(Glorot uniform for floats, zeros otherwise)."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from . import _random
from ._errors import JaxvarsTypeError

SIGNATURES = (
    "get_variable('{name}'): cannot call the initializer {initializer!r} with the "
    "arguments of either signature jaxvars calls. An initializer is a function "
    "f(key, shape, dtype) -> array (as jax.nn.initializers; the key comes from jv.random), "
    "a function or TF-style initializer object f(shape, dtype) -> array (as jnp.zeros, "
    "jnp.ones, tf.compat.v1 initializers), or an array-like constant (then shape may be "
    "omitted). Wrap another function to fit, e.g. "
    "initializer=lambda key, shape, dtype: my_init(shape)."
)


def initial_value(
    initializer: Callable[..., Any], name: str, shape: Any, dtype: Any
) -> Callable[[], Any]:
    """The call that computes ``name``'s initial value, drawing a key if it takes one.

    Left uncalled, so that under a sharding it is computed shard by shard.
    """
    if _takes_key(initializer, name):
        return functools.partial(initializer, _random.next_key(), shape, dtype)
    return functools.partial(initializer, shape, dtype)


def _takes_key(initializer: Callable[..., Any], name: str) -> bool:
    """Whether ``initializer`` is called ``(key, shape, dtype)``; else ``(shape, dtype)``."""
    try:
        signature = inspect.signature(initializer)
    except (TypeError, ValueError):  # no signature to read: JAX's convention
        return True
    with_key, without_key = _binds(signature, 3), _binds(signature, 2)
    if with_key and without_key:
        # Both fit (TF's __call__(shape, dtype=None, partition_info=None), or
        # *args): only a first argument named like TF's makes it a shape.
        return next(iter(signature.parameters)) != "shape"
    if not (with_key or without_key):
        raise JaxvarsTypeError(SIGNATURES.format(name=name, initializer=initializer))
    return with_key


def _binds(signature: inspect.Signature, count: int) -> bool:
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """TensorFlow's fan-in and fan-out, defined for every rank (scalars included)."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def glorot_uniform(key: jax.Array, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    """Uniform in ``[-limit, limit)`` with ``limit = sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = fans(shape)
    limit = math.sqrt(6.0 / max(1, fan_in + fan_out))
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def default_for(dtype: Any):
    """TF1's default: Glorot uniform for floating dtypes, zeros for every other."""
    if jnp.issubdtype(dtype, jnp.floating):
        return glorot_uniform
    return lambda key, shape, dtype: jnp.zeros(shape, dtype)
