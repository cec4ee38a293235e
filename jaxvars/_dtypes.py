"""How values become arrays: dtype inference and the assign casting rule.

Two kinds of input are told apart, as in JAX. *Strong* values (NumPy and JAX
arrays) keep their dtype and may be cast to a variable's dtype only when NumPy's
``same_kind`` rule allows it. *Weak* values (Python scalars and nested lists of
them, or weakly typed JAX arrays) have no dtype of their own, only a kind, and fit
any dtype of that kind or a wider one: ``1`` fits uint8 and float32, ``1.5`` fits
bfloat16 but not int32, ``True`` fits everything, nothing but ``bool`` fits bool.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import DTYPE_MISMATCH, JaxvarsTypeError, JaxvarsValueError

_PYTHON_SCALARS = (bool, int, float, complex)
_KIND_ORDER = (jnp.bool_, jnp.integer, jnp.floating, jnp.complexfloating)


def kind_rank(dtype: np.dtype) -> int:
    """Position of ``dtype``'s kind in bool < integer < floating < complex, or -1."""
    for rank, kind in enumerate(_KIND_ORDER):
        if jnp.issubdtype(dtype, kind):
            return rank
    return -1


def canonical_dtype(dtype: Any, *, name: str) -> np.dtype:
    """The dtype JAX stores for ``dtype`` (64-bit types narrow while x64 is off)."""
    try:
        requested = np.dtype(dtype)
    except TypeError as e:
        raise JaxvarsTypeError(f"Variable '{name}': {dtype!r} is not a dtype ({e}).") from None
    if kind_rank(requested) < 0:
        raise JaxvarsTypeError(
            f"Variable '{name}': dtype {requested} is not numeric; variables hold bool, "
            "integer, floating or complex arrays."
        )
    canonical = np.dtype(jax.dtypes.canonicalize_dtype(requested))
    if canonical != requested:
        warnings.warn(
            f"Variable '{name}': dtype {requested} is not available while jax_enable_x64 "
            f"is off; it is stored as {canonical}, as jax.numpy does.",
            UserWarning,
            stacklevel=4,
        )
    return canonical


def infer_dtype(array: Any) -> np.dtype:
    """The dtype ``jnp.asarray`` gives ``array`` while x64 is off (float64 -> float32)."""
    return np.dtype(jax.dtypes.canonicalize_dtype(array.dtype))


def to_array(value: Any, *, name: str) -> tuple[Any, bool]:
    """Turn ``value`` into an array without choosing its final dtype.

    Returns ``(array, weak)``: a JAX array (or tracer) as it is, anything else
    as a NumPy array, and whether the value is weakly typed (see module doc).

    Raises:
        TypeError: strings, None, objects and other non-numeric input.
        ValueError: ragged nested lists.
    """
    if isinstance(value, jax.Array):
        return value, value.weak_type
    if value is None or isinstance(value, (str, bytes)):
        raise JaxvarsTypeError(
            f"Variable '{name}' needs a numeric array-like value (a Python number, a nested "
            f"list of numbers, a NumPy or JAX array), got {type(value).__name__}: {value!r}."
        )
    if hasattr(value, "__jax_array__"):
        return to_array(value.__jax_array__(), name=name)
    weak = isinstance(value, (*_PYTHON_SCALARS, list, tuple))
    try:
        array = np.asarray(value)
    except ValueError as e:
        raise JaxvarsValueError(
            f"Variable '{name}': cannot make an array of {type(value).__name__} value "
            f"{value!r}: {e}. Nested lists must be rectangular."
        ) from None
    if kind_rank(array.dtype) < 0:
        raise JaxvarsTypeError(
            f"Variable '{name}' needs a numeric array-like value, got {type(value).__name__} "
            f"with dtype {array.dtype}: {value!r}."
        )
    return array, weak


def can_cast(src: np.dtype, dst: np.dtype, weak: bool) -> bool:
    """The assign casting rule: ``same_kind`` for strong values, kinds for weak ones."""
    if src == dst:
        return True
    if weak:
        src_rank, dst_rank = kind_rank(src), kind_rank(dst)
        return src_rank <= dst_rank and (dst_rank > 0 or src_rank == 0)
    return bool(np.can_cast(src, dst, "same_kind"))


def cast(array: Any, weak: bool, dst: np.dtype, *, name: str, op: str) -> jax.Array:
    """Cast a ``to_array`` result to ``dst`` under the casting rule, strongly typed.

    Raises:
        TypeError: the cast is not allowed; names both dtypes.
        ValueError: a weak integer that does not fit ``dst``.
    """
    src = np.dtype(array.dtype)
    if isinstance(array, np.ndarray):
        src = infer_dtype(array)
    if not can_cast(src, dst, weak):
        raise JaxvarsTypeError(DTYPE_MISMATCH.format(op=op, src=src, dst=dst, name=name))
    if weak and isinstance(array, np.ndarray) and jnp.issubdtype(dst, jnp.integer):
        _check_integer_range(array, dst, name)
    if isinstance(array, np.ndarray) or array.dtype != dst or array.weak_type:
        return jnp.asarray(array, dtype=dst)
    return array


def _check_integer_range(array: np.ndarray, dst: np.dtype, name: str) -> None:
    """Refuse Python integers that would wrap around in ``dst`` (silent data loss)."""
    if array.size == 0 or not jnp.issubdtype(array.dtype, jnp.integer):
        return
    info = jnp.iinfo(dst)
    low, high = int(array.min()), int(array.max())
    if low < info.min or high > info.max:
        raise JaxvarsValueError(
            f"Variable '{name}': integer values in [{low}, {high}] do not fit dtype {dst} "
            f"(range [{info.min}, {info.max}])."
        )


def broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether an operand of ``shape`` broadcasts to ``target`` (keeping ``target``)."""
    try:
        return jnp.broadcast_shapes(shape, target) == target
    except ValueError:
        return False
