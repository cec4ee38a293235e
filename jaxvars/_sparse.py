"""TF's sparse variable updates (``scatter_*``, ``sparse_read``), mixed into Variable."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

from . import _dtypes, _trace
from ._errors import JaxvarsIndexError, JaxvarsTypeError, JaxvarsValueError
from ._explain import public
from ._operators import unwrap

if TYPE_CHECKING:
    from ._variable import Variable


class SparseUpdates:
    """Row and element updates of a variable, as ``tf.Variable``'s scatter methods.

    Each casts ``updates`` to the variable's dtype under the assign rule,
    checks shapes against the indices, writes one new array (so eagerly and
    inside ``jv.jit`` alike) and returns the variable. Indices follow NumPy:
    negative ones count from the end. Eagerly, an index out of range raises
    an error that is both a ``jv.JaxvarsError`` and an ``IndexError``, and
    changes nothing; inside ``jv.jit`` indices are not known, and an update
    at an index out of range is dropped, as in ``jax.numpy``.
    """

    __slots__ = ()

    @public
    def scatter_update(self: Any, indices: Any, updates: Any) -> Variable:
        """Set the rows ``indices`` (along axis 0) to ``updates``.

        Example:
            >>> import jaxvars as jv
            >>> v = jv.Variable([[1, 2], [3, 4], [5, 6]])
            >>> v.scatter_update([2, 0], [[0, 0], [9, 9]]).numpy().tolist()
            [[9, 9], [3, 4], [0, 0]]
        """
        return _scatter(self, "scatter_update", "set", indices, updates, nd=False)

    @public
    def scatter_add(self: Any, indices: Any, updates: Any) -> Variable:
        """Add ``updates`` to the rows ``indices``; repeated indices add up."""
        return _scatter(self, "scatter_add", "add", indices, updates, nd=False)

    @public
    def scatter_sub(self: Any, indices: Any, updates: Any) -> Variable:
        """Subtract ``updates`` from the rows ``indices``; repeated indices add up."""
        return _scatter(self, "scatter_sub", "subtract", indices, updates, nd=False)

    @public
    def scatter_max(self: Any, indices: Any, updates: Any) -> Variable:
        """Set the rows ``indices`` to the elementwise maximum with ``updates``."""
        return _scatter(self, "scatter_max", "max", indices, updates, nd=False)

    @public
    def scatter_min(self: Any, indices: Any, updates: Any) -> Variable:
        """Set the rows ``indices`` to the elementwise minimum with ``updates``."""
        return _scatter(self, "scatter_min", "min", indices, updates, nd=False)

    @public
    def scatter_nd_update(self: Any, indices: Any, updates: Any) -> Variable:
        """Set the slices that ``indices`` (shape ``[..., k]``, each row the first
        ``k`` coordinates of one slice) point to.

        Example:
            >>> import jaxvars as jv
            >>> v = jv.Variable([[0.0, 0.0], [0.0, 0.0]])
            >>> v.scatter_nd_update([[0, 1], [1, 0]], [5.0, 7.0]).numpy().tolist()
            [[0.0, 5.0], [7.0, 0.0]]
        """
        return _scatter(self, "scatter_nd_update", "set", indices, updates, nd=True)

    @public
    def scatter_nd_add(self: Any, indices: Any, updates: Any) -> Variable:
        """Add ``updates`` at the slices ``indices`` points to (see ``scatter_nd_update``)."""
        return _scatter(self, "scatter_nd_add", "add", indices, updates, nd=True)

    @public
    def scatter_nd_sub(self: Any, indices: Any, updates: Any) -> Variable:
        """Subtract ``updates`` at the slices ``indices`` points to."""
        return _scatter(self, "scatter_nd_sub", "subtract", indices, updates, nd=True)

    @public
    def sparse_read(self: Any, indices: Any) -> Any:
        """The rows ``indices`` (along axis 0), as ``tf.gather``; the variable is unchanged.

        Example:
            >>> import jaxvars as jv
            >>> v = jv.Variable([10, 20, 30])
            >>> v.sparse_read([2, 0]).tolist()
            [30, 10]
        """
        index = _indices(self, "sparse_read", indices)
        value = self._value
        _check_in_range(self, "sparse_read", index, value.shape[:1])
        return jnp.take(value, index, axis=0)


def _scatter(
    variable: Variable, op: str, method: str, indices: Any, updates: Any, *, nd: bool
) -> Variable:
    index = _indices(variable, op, indices)
    array, weak = _dtypes.to_array(unwrap(updates), name=variable.name)
    part = variable._aligned(_dtypes.cast(array, weak, variable.dtype, name=variable.name, op=op))
    with _trace.STATE_LOCK:  # one read-modify-write, as assign_add
        value = variable._value
        if nd:
            depth = index.shape[-1] if index.ndim else 0
            if index.ndim == 0 or depth > value.ndim:
                raise JaxvarsValueError(
                    f"{op} on variable '{variable.name}' (shape {tuple(value.shape)}): indices "
                    f"must have shape [..., k] with k <= {value.ndim}; got {tuple(index.shape)}."
                )
            expected = (*index.shape[:-1], *value.shape[depth:])
            _check_in_range(variable, op, index, value.shape[:depth])
            where: Any = tuple(jnp.moveaxis(index, -1, 0))
        else:
            expected = (*index.shape, *value.shape[1:])
            _check_in_range(variable, op, index, value.shape[:1])
            where = index
        if not _dtypes.broadcasts_to(tuple(part.shape), expected):
            raise JaxvarsValueError(
                f"{op} on variable '{variable.name}' (shape {tuple(value.shape)}): updates of "
                f"shape {tuple(part.shape)} do not fit indices of shape {tuple(index.shape)}, "
                f"which need updates of shape {expected}. The variable is unchanged."
            )
        variable._write(getattr(value.at[where], method)(part))
    return variable


def _indices(variable: Variable, op: str, indices: Any) -> Any:
    index = jnp.asarray(unwrap(indices))
    if not jnp.issubdtype(index.dtype, jnp.integer):
        raise JaxvarsTypeError(
            f"{op} on variable '{variable.name}': indices must be integers, got dtype "
            f"{index.dtype}."
        )
    return index


def _check_in_range(variable: Variable, op: str, index: Any, bounds: tuple[int, ...]) -> None:
    """Eagerly, refuse an index out of range (inside a trace it is not known)."""
    if isinstance(index, Tracer) or index.size == 0:
        return
    rows = np.asarray(index).reshape(-1, len(bounds))  # one row of coordinates per update
    for axis, bound in enumerate(bounds):
        column = rows[:, axis]
        bad = column[(column < -bound) | (column >= bound)]
        if bad.size:
            raise JaxvarsIndexError(
                f"{op} on variable '{variable.name}' (shape {variable.shape}): index "
                f"{int(bad[0])} is out of range for axis {axis} of size {bound} (valid "
                f"indices: {-bound} to {bound - 1}). The variable is unchanged."
            )
