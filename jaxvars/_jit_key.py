"""How a jv.jit call becomes a cache key and the leaves compiled code takes, and back.

A call's leaves split three ways. Arrays and Python numbers are traced
(dynamic leaves), as by ``jax.jit``. Everything JAX cannot trace is passed to
``fn`` as itself, automatically static as with ``tf.function``: Variables,
Modules and other objects (functions, instances of plain classes) key by
identity and are held weakly; values that cannot be weakly referenced (bool,
str, dtypes) key by value. ``static_argnums`` / ``static_argnames`` values
key by value and are put back in place when the arguments are rebuilt.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from ._errors import JaxvarsTypeError
from ._jax_private import ArrayImpl
from ._module import Module
from ._scope import get_variable_scope
from ._store import active_store
from ._variable import Variable

# Variables and Modules stand for state: transforms pass them as themselves.
OBJECT_TYPES = (Variable, Module)
# What jax.jit traces (besides objects offering __jax_array__).
_TRACED_TYPES = (jax.Array, np.ndarray, np.generic, int, float, complex)


def is_object(x: Any) -> bool:
    return isinstance(x, OBJECT_TYPES)


def is_traced(x: Any) -> bool:
    """Whether a call's leaf ``x`` is traced: arrays and numbers, but not bools or objects."""
    if type(x) is ArrayImpl:
        return True
    if isinstance(x, OBJECT_TYPES) or isinstance(x, bool):
        return False
    return isinstance(x, _TRACED_TYPES) or hasattr(x, "__jax_array__")


def by_identity(x: Any) -> bool:
    """Whether an untraced leaf keys by identity (held weakly) rather than by value."""
    if isinstance(x, OBJECT_TYPES):
        return True
    try:
        weakref.ref(x)
    except TypeError:
        return False
    return True


def holder(x: Any) -> Callable[[], Any] | None:
    """How compiled code finds a call's leaf again: None for a traced leaf (it is an
    input), a weak reference to an object, a closure holding a value."""
    if is_traced(x):
        return None
    if by_identity(x):
        return weakref.ref(x)
    return lambda: x


def _leaf_key(x: Any, fn_name: str) -> Any:
    if is_traced(x):
        return None
    if by_identity(x):
        return id(x)
    try:
        hash(x)
    except TypeError:
        raise JaxvarsTypeError(
            f"jv.jit({fn_name}): an argument of type {type(x).__name__} can be neither traced "
            "(it is no array or number) nor kept as a static value (it is not hashable). "
            "Register its class as a pytree, or reach it through a closure."
        ) from None
    return (type(x), x)


def flat_key(args: tuple[Any, ...]) -> tuple[int | None, ...]:
    """The flat form of the key: None for an array, ``id()`` for anything else."""
    return tuple([None if type(a) is ArrayImpl else id(a) for a in args])


def cache_key(args: tuple[Any, ...], kwargs: dict[str, Any], statics: Any, fn_name: str) -> Any:
    """The key of a call, and the leaves compiled code takes.

    Returns ``(key, leaves, treedef)``. A call whose arguments are all arrays
    and objects has the flat key (``treedef`` None: the leaves are the
    arguments); any other keys by pytree structure, the objects' ids and the
    static values.
    """
    if not kwargs and not statics:
        key = flat_key(args)
        flat = zip(key, args, strict=True)
        if all(a is None or (not is_traced(x) and by_identity(x)) for a, x in flat):
            return key, args, None
    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs), is_leaf=is_object)
    return (treedef, tuple(_leaf_key(x, fn_name) for x in leaves), statics), leaves, treedef


class Slot:
    """Where an untraced leaf (an object, a static value) stands, in arguments handed to JAX.

    A pytree node with no leaves: JAX traces the arguments around it with the
    names the user gave them, and ``Slot.index`` finds the object again.
    """

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


jax.tree_util.register_pytree_node(
    Slot,
    lambda slot: ((), slot.index),
    lambda index, _: Slot(index),  # pyright: ignore[reportArgumentType]  # leafless
)


def with_slots(leaves: Sequence[Any], treedef: Any) -> tuple[Sequence[Any], dict[str, Any]]:
    """The call's ``(args, kwargs)`` with each untraced leaf replaced by a Slot.

    In the flat form (``treedef`` None) the untraced leaves are left out: the
    arguments are the leaves, so positions find the objects again, and a call
    passes its traced leaves as they are (a Slot costs JAX a Python call).
    """
    if treedef is None:
        return [x for x in leaves if is_traced(x)], {}
    marked = [x if is_traced(x) else Slot(i) for i, x in enumerate(leaves)]
    return jax.tree_util.tree_unflatten(treedef, marked)


def from_slots(args: Any, kwargs: Any, objects: Sequence[Any], treedef: Any) -> list[Any]:
    """The call's leaves again from ``with_slots``' arguments, the untraced ones
    taken from ``objects`` (by position; None where a leaf is traced)."""
    if treedef is None:
        rest = iter(args)
        return [next(rest) if o is None else o for o in objects]
    flat = jax.tree_util.tree_leaves((args, kwargs), is_leaf=lambda x: isinstance(x, Slot))
    return [objects[x.index] if isinstance(x, Slot) else x for x in flat]


def rebuilder(treedef: Any, statics: Any) -> Callable[[list[Any]], Any]:
    """A function rebuilding ``(args, kwargs)`` from a call's leaves."""

    def rebuild(call_leaves: list[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if treedef is None:  # the flat form: leaves are the arguments
            args, kwargs = tuple(call_leaves), {}
        else:
            args, kwargs = jax.tree_util.tree_unflatten(treedef, call_leaves)
        if statics:
            positional, named = statics
            args = list(args)
            for index, value in positional:
                args.insert(index, value)
            kwargs = {**kwargs, **dict(named)}
        return tuple(args), kwargs

    return rebuild


def split_statics(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    argnums: Sequence[int],
    argnames: Sequence[str],
    fn_name: str,
) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
    """Take the static arguments out of a call: ``(args, kwargs, statics)``."""
    n = len(args)
    positions = sorted(i % n for i in argnums if -n <= i < n)
    positional = tuple((i, args[i]) for i in positions)
    named = tuple(sorted((k, kwargs[k]) for k in argnames if k in kwargs))
    args = tuple(a for i, a in enumerate(args) if i not in positions)
    kwargs = {k: v for k, v in kwargs.items() if k not in argnames}
    statics = (positional, named)
    try:
        hash(statics)
    except TypeError as e:
        raise JaxvarsTypeError(
            f"jv.jit({fn_name}): static arguments must be hashable: {e}"
        ) from None
    return args, kwargs, statics


def as_tuple(x: Any) -> tuple[Any, ...]:
    if isinstance(x, (int, str)):
        return (x,)
    return tuple(x)


def from_call(spec: list[Any]) -> Callable[[Sequence[Any]], list[Any]]:
    """A function giving the spec's variables for a call's leaves (see _Entry)."""
    held = [v for v in spec if isinstance(v, Variable)]
    positions = [i for i in spec if isinstance(i, int)]
    if not positions:
        return lambda source: held
    return lambda source: [*held, *[source[i] for i in positions]]


def selector(positions: list[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """A C-level function picking ``positions`` out of a sequence, as a tuple."""
    if len(positions) == 1:
        (only,) = positions
        return lambda source: (source[only],)
    if not positions:
        return lambda source: ()
    return operator.itemgetter(*positions)


def where_named(key: Any) -> Any:
    """``key`` with where ``get_variable`` looks names up: the store and the scope
    (for functions that look variables up by name, see ``Jitted``)."""
    return (key, id(active_store()), get_variable_scope().name)
