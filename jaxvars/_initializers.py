"""Default initializers of ``get_variable``: Glorot uniform for floats, zeros otherwise."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp


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
