"""Why did my step recompile? Retraces of jv.jit functions explained in the user's terms.

With ``jv.jit(fn, explain_retraces=True)``, or JAX's ``jax_explain_cache_misses``
option on, each retrace logs one WARNING on the ``jaxvars`` logger: the
function, where it is defined, the call number, and what differs from the
closest signature traced before: an argument's shape, dtype, weak type or
sharding, a static argument's value, another object, a variable's shape,
dtype, sharding or trainable setting, a variable created or no longer used,
or the change that evicted the compiled code (a Module attribute, a
trainable flag, a store cleared).

A signature is a plain ``{label: description}`` dict, made only on a miss
(nothing is done per cached call); a function keeps its last few.
"""

from __future__ import annotations

import collections
import inspect
import logging
import reprlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.core import Tracer

from ._variable import Variable

logger = logging.getLogger("jaxvars")

_KEPT = 8  # signatures remembered per function


class Record:
    """A signature traced before, and what evicted its compiled code (if anything did)."""

    __slots__ = ("signature", "evicted_by")

    def __init__(self, signature: dict[str, str]) -> None:
        self.signature = signature
        self.evicted_by: str | None = None


def enabled(explain: bool) -> bool:
    return explain or bool(getattr(jax.config, "jax_explain_cache_misses", False))


def history() -> collections.deque[Record]:
    return collections.deque(maxlen=_KEPT)


def signature(
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
    variables: dict[Any, Any],
    statics: tuple[Sequence[int], Sequence[str]] = ((), ()),
) -> dict[str, str]:
    """``{label: description}`` of a call: its arguments by parameter name and path
    (``statics``: the static argument numbers and names, described by value), and
    each variable it touched with the value it saw."""
    described = {}
    for label, x in _arguments(fn, args, kwargs, statics):
        described[label] = _repr(x) if label.startswith("static") else _describe(x)
    for variable, value in variables.items():
        described[f"variable {_label(variable)}"] = (
            f"{_describe(value)}, trainable={_trainable(variable)}"
        )
    return described


def explain(
    fn: Callable[..., Any], name: str, call: int, new: dict[str, str], past: Sequence[Record]
) -> None:
    """Log what differs between ``new`` and the closest signature in ``past`` (if any)."""
    if not past:
        return
    # The newest of the closest: an older record's eviction is old news.
    closest = min(reversed(past), key=lambda record: len(_differences(record.signature, new)))
    changes = _differences(closest.signature, new)
    if closest.evicted_by is not None:
        changes.insert(0, closest.evicted_by)
    what = "; ".join(changes) or "no argument or variable differs (the function's Python changed)"
    code = getattr(inspect.unwrap(fn), "__code__", None)
    where = f" ({code.co_filename}:{code.co_firstlineno})" if code is not None else ""
    logger.warning("jv.jit(%s)%s traced again at call %d: %s", name, where, call, what)


def _differences(old: dict[str, str], new: dict[str, str]) -> list[str]:
    changes = []
    for label, now in new.items():
        before = old.get(label)
        if before is None:
            created = label.startswith("variable ")
            changes.append(f"{label} {'created or newly used' if created else 'added'}: {now}")
        elif before != now:
            changes.append(f"{label}: {before} -> {now}")
    for label in old.keys() - new.keys():
        gone = "freed or no longer used" if label.startswith("variable ") else "removed"
        changes.append(f"{label} {gone}")
    return changes


def _arguments(
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
    statics: tuple[Sequence[int], Sequence[str]],
) -> list[tuple[str, Any]]:
    """(label, leaf) for each leaf of the call, labelled by parameter name and path."""
    argnums, argnames = statics
    static = {f"args[{i % len(args)}]" for i in argnums if -len(args) <= i < len(args)}
    named = {**{f"args[{i}]": a for i, a in enumerate(args)}, **kwargs}
    try:
        parameters = list(inspect.signature(fn).parameters)
        bound = inspect.signature(fn).bind(*args, **kwargs).arguments
        static = {parameters[int(s[5:-1])] for s in static} | set(argnames)
        named = dict(bound)
    except (TypeError, ValueError, IndexError):
        static |= set(argnames)
    pairs = []
    for name, value in named.items():
        if name in static:
            pairs.append((f"static argument {name}", value))
            continue
        leaves, _ = jax.tree_util.tree_flatten_with_path(value, is_leaf=_is_state)
        for path, leaf in leaves:
            pairs.append((f"argument {name}{jax.tree_util.keystr(path)}", leaf))
    return pairs


def _is_state(x: Any) -> bool:
    from ._module import Module  # imported here: modules are built on variables

    return isinstance(x, (Variable, Module))


def _describe(x: Any) -> str:
    if isinstance(x, (jax.Array, int, float, complex)) and not isinstance(x, bool):
        aval = jax.typeof(x)
        text = f"{aval.dtype}[{','.join(map(str, aval.shape))}]"
        if aval.weak_type:
            text += " (weakly typed: a Python number)"
        return text + _sharding(x, aval)
    if isinstance(x, (np.ndarray, np.generic)):
        return f"{x.dtype}[{','.join(map(str, x.shape))}]"
    if isinstance(x, (bool, str, bytes, type(None))) or type(x).__hash__ is None:
        return _repr(x)
    try:
        hash(x)
    except TypeError:
        return _repr(x)
    if type(x).__eq__ is object.__eq__:  # keyed by identity: another object is another key
        return f"{type(x).__name__} object at {id(x):#x}"
    return _repr(x)


def _repr(x: Any) -> str:
    try:
        return _SHORT.repr(x)
    except Exception:  # a user's __repr__ that fails must not fail the call
        return f"<{type(x).__name__} object>"


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60


def _sharding(x: Any, aval: Any) -> str:
    """How ``x`` is laid out over devices, if over several: mesh axes per dimension."""
    abstract = getattr(aval, "sharding", None)
    if abstract is not None and getattr(abstract.mesh, "axis_names", ()):  # in the type
        return f" sharded {abstract.spec} over mesh axes {abstract.mesh.axis_names}"
    concrete = None if isinstance(x, Tracer) else getattr(x, "sharding", None)
    if concrete is None or len(concrete.device_set) < 2:
        return ""
    spec = getattr(concrete, "spec", None)
    if spec is None or all(axis is None for axis in spec):
        return f" replicated on {len(concrete.device_set)} devices"
    return f" sharded {spec} over mesh axes {concrete.mesh.axis_names}"


def _label(variable: Variable) -> str:
    from ._module import attribute_path  # imported here: modules are built on variables

    path = attribute_path(variable) if variable._held_by is not None else ""
    return f"'{variable.name}'" + (f" ({path})" if path else "")


def _trainable(variable: Variable) -> str:
    trainable = variable.trainable
    return str(trainable) if isinstance(trainable, bool) else "a mask"
