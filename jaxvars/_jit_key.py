"""How a jv.jit call becomes a cache key and the leaves compiled code takes, and back.

A call's arguments split three ways: arrays and Python numbers are traced
(dynamic leaves); Variables and Modules are passed as themselves and key by
identity; ``static_argnums`` / ``static_argnames`` values key by value and are
put back in place when the arguments are rebuilt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
from jax._src.array import ArrayImpl

from ._errors import JaxvarsTypeError
from ._module import Module
from ._variable import Variable

# An argument that is a Variable or Module is passed to ``fn`` as itself (its
# identity keys the compiled code); every other leaf is traced like in jax.jit.
OBJECT_TYPES = (Variable, Module)


def is_object(x: Any) -> bool:
    return isinstance(x, OBJECT_TYPES)


def flat_key(args: tuple[Any, ...]) -> tuple[int | None, ...]:
    """The flat form of the key: None for an array, ``id()`` for anything else."""
    return tuple([None if type(a) is ArrayImpl else id(a) for a in args])


def cache_key(args: tuple[Any, ...], kwargs: dict[str, Any], statics: Any) -> Any:
    """The key of a call, and the leaves compiled code takes.

    Returns ``(key, leaves, treedef)``. A call whose arguments are all arrays,
    Variables and Modules has the flat key (``treedef`` None: the leaves are
    the arguments); any other keys by pytree structure, the objects' ids and
    the static values.
    """
    if not kwargs and not statics:
        key = flat_key(args)
        if all(a is None or isinstance(x, OBJECT_TYPES) for a, x in zip(key, args, strict=True)):
            return key, args, None
    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs), is_leaf=is_object)
    objects = tuple(id(x) if isinstance(x, OBJECT_TYPES) else None for x in leaves)
    return (treedef, objects, statics), leaves, treedef


class Slot:
    """Where a Variable or Module argument stands, in arguments handed to JAX.

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


def with_slots(leaves: Sequence[Any], treedef: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's ``(args, kwargs)`` with each Variable or Module replaced by a Slot."""
    marked = [Slot(i) if isinstance(x, OBJECT_TYPES) else x for i, x in enumerate(leaves)]
    if treedef is None:
        return tuple(marked), {}
    return jax.tree_util.tree_unflatten(treedef, marked)


def from_slots(args: Any, kwargs: Any, leaves: Sequence[Any]) -> list[Any]:
    """The call's leaves again: ``args``/``kwargs`` traced, Slots back to their objects."""
    flat = jax.tree_util.tree_leaves((args, kwargs), is_leaf=lambda x: isinstance(x, Slot))
    return [leaves[x.index] if isinstance(x, Slot) else x for x in flat]


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
