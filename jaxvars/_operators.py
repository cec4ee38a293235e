"""How a Variable behaves like an array: its operators and conversions, declared
once in a class body so type checkers see them.

Every operator reads the current value and returns a new array (comparisons
are elementwise, as for arrays); the in-place ones (``v += d``) assign, like
a NumPy array's, and leave ``v`` the same Variable. Conversions (``float(v)``,
``np.asarray(v)``, ``len(v)``, iteration) convert the current value.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from . import _placement
from ._explain import public

_hooks = _placement.HOOKS  # non-zero inside jv.device or while logging placement

Binary = Callable[[Any, Any], jax.Array]


def unwrap(x: Any) -> Any:
    """A Variable's current value; anything else as it is."""
    return x._value if isinstance(x, ArrayOperators) else x


def _names(*operands: Any) -> list[str]:
    return [f"'{x.name}'" if isinstance(x, ArrayOperators) else type(x).__name__ for x in operands]


def _forward(op: Callable[[Any, Any], Any]) -> Binary:
    def forward(self: Any, other: Any) -> jax.Array:
        if _hooks[0]:
            return _placement.expression(op, [self._value, unwrap(other)], _names(self, other))
        return op(self._value, unwrap(other))

    return forward


def _reflected(op: Callable[[Any, Any], Any]) -> Binary:
    def reflected(self: Any, other: Any) -> jax.Array:
        if _hooks[0]:
            return _placement.expression(op, [unwrap(other), self._value], _names(other, self))
        return op(unwrap(other), self._value)

    return reflected


def _unary(op: Callable[[Any], Any]) -> Callable[[Any], jax.Array]:
    def apply(self: Any) -> jax.Array:
        if _hooks[0]:
            return _placement.expression(op, [self._value], _names(self))
        return op(self._value)

    return apply


def _in_place(op: Callable[[Any, Any], Any], symbol: str) -> Callable[[Any, Any], Any]:
    @public  # an assignment: its errors end at the user's `v += d`
    def apply(self: Any, other: Any) -> Any:
        return self._update(op, other, f"assign ({symbol}=)")

    return apply


_equal, _not_equal = _forward(operator.eq), _forward(operator.ne)


class ArrayOperators:
    """The operators of ``jv.Variable`` (its only subclass)."""

    __slots__ = ()

    if TYPE_CHECKING:

        @property
        def _value(self) -> jax.Array: ...
        @property
        def name(self) -> str: ...
        def _update(self, op: Callable[[Any, Any], Any], delta: Any, what: str) -> Any: ...
        def assign(self, value: Any) -> Any: ...

    __add__, __radd__ = _forward(operator.add), _reflected(operator.add)
    __sub__, __rsub__ = _forward(operator.sub), _reflected(operator.sub)
    __mul__, __rmul__ = _forward(operator.mul), _reflected(operator.mul)
    __truediv__, __rtruediv__ = _forward(operator.truediv), _reflected(operator.truediv)
    __floordiv__, __rfloordiv__ = _forward(operator.floordiv), _reflected(operator.floordiv)
    __mod__, __rmod__ = _forward(operator.mod), _reflected(operator.mod)
    __pow__, __rpow__ = _forward(operator.pow), _reflected(operator.pow)
    __matmul__, __rmatmul__ = _forward(operator.matmul), _reflected(operator.matmul)
    __and__, __rand__ = _forward(operator.and_), _reflected(operator.and_)
    __or__, __ror__ = _forward(operator.or_), _reflected(operator.or_)
    __xor__, __rxor__ = _forward(operator.xor), _reflected(operator.xor)
    __lshift__, __rlshift__ = _forward(operator.lshift), _reflected(operator.lshift)
    __rshift__, __rrshift__ = _forward(operator.rshift), _reflected(operator.rshift)
    __divmod__, __rdivmod__ = _forward(divmod), _reflected(divmod)

    __lt__, __le__ = _forward(operator.lt), _forward(operator.le)
    __gt__, __ge__ = _forward(operator.gt), _forward(operator.ge)
    __hash__ = object.__hash__

    # Elementwise, as for arrays (a Variable hashes by identity all the same).
    # Written as methods, so that type checkers see arrays, not object's bool.
    def __eq__(self, other: Any) -> jax.Array:  # pyright: ignore[reportIncompatibleMethodOverride]
        return _equal(self, other)

    def __ne__(self, other: Any) -> jax.Array:  # pyright: ignore[reportIncompatibleMethodOverride]
        return _not_equal(self, other)

    __neg__, __pos__ = _unary(operator.neg), _unary(operator.pos)
    __abs__, __invert__ = _unary(operator.abs), _unary(operator.invert)

    __iadd__, __isub__ = _in_place(operator.add, "+"), _in_place(operator.sub, "-")
    __imul__, __itruediv__ = _in_place(operator.mul, "*"), _in_place(operator.truediv, "/")
    __ifloordiv__, __imod__ = _in_place(operator.floordiv, "//"), _in_place(operator.mod, "%")
    __ipow__, __iand__ = _in_place(operator.pow, "**"), _in_place(operator.and_, "&")
    __ior__, __ixor__ = _in_place(operator.or_, "|"), _in_place(operator.xor, "^")
    __ilshift__, __irshift__ = _in_place(operator.lshift, "<<"), _in_place(operator.rshift, ">>")

    def __imatmul__(self, other: Any) -> Any:
        # A matrix product may change the shape: assign checks it.
        return self.assign(self._value @ unwrap(other))

    # -- conversions: a Variable converts like its current value ----------------------

    def __jax_array__(self) -> jax.Array:
        return self._value

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = np.asarray(self._value, dtype=dtype)
        return array.copy() if copy else array

    def __len__(self) -> int:
        return len(self._value)

    def __iter__(self) -> Iterator[jax.Array]:
        return iter(self._value)

    def __getitem__(self, index: Any) -> jax.Array:
        return self._value[index]

    def __bool__(self) -> bool:
        return bool(self._value)

    def __float__(self) -> float:
        return float(self._value)

    def __int__(self) -> int:
        return int(self._value)

    def __complex__(self) -> complex:
        return complex(self._value)

    def __index__(self) -> int:
        return operator.index(self._value)

    def __format__(self, spec: str) -> str:
        return format(self._value, spec) if spec else repr(self)
