"""Which variables a call of a function will probably touch: the guess behind one trace.

A transform that must hand JAX every variable a function uses as an input,
before the function has run, guesses them from what the function and its
arguments refer to (``jv.jit``'s one trace, ``jv.vmap``'s split variables).
A variable missed costs a second trace; one too many only an unused input.
"""

from __future__ import annotations

import functools
import itertools
import types
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax

from . import _random
from ._module import Module
from ._variable import Variable

_LIMIT = 100_000  # objects visited at most per guess: a guess must stay cheap
_OPAQUE = (type, types.ModuleType, jax.Array, str, bytes, int, float, complex, bool)


def expected_variables(
    functions: Sequence[Callable[..., Any]], leaves: Sequence[Any], recent: Iterable[Variable]
) -> list[Variable]:
    """The variables a call of ``functions`` with ``leaves`` will probably touch, in a
    fixed order.

    Those of the arguments (Variables, Modules, objects holding them), of the
    objects the functions' closures and globals refer to, and those the previous
    trace touched. A variable missed costs a second trace, one too many only an
    unused input; abstract variables (no value yet) are left out.
    """
    found: dict[Variable, None] = {}
    seen: set[int] = set()
    budget = [_LIMIT]

    def visit(x: Any, depth: int) -> None:
        budget[0] -= 1
        if budget[0] < 0 or id(x) in seen:
            return
        seen.add(id(x))
        try:  # only a hint: an object that fails to show its insides is skipped
            if isinstance(x, _OPAQUE):
                return
            if isinstance(x, Variable):
                if isinstance(x._array, jax.Array):  # not abstract (no value yet)
                    found[x] = None
                return
            if isinstance(x, Module):
                for variable in x.variables:
                    visit(variable, depth)
            if depth > 0:  # a Module's other attributes too (an optimiser it holds)
                for inner in itertools.islice(_referred(x), max(budget[0], 0)):
                    visit(inner, depth - 1)
        except Exception:
            pass

    for leaf in leaves:
        visit(leaf, 3)
    for fn in functions:
        visit(fn, 4)
    for variable in [*recent, *_random.made_stream()]:  # any function may draw randomness
        visit(variable, 0)
    return list(found)


def _referred(x: Any) -> Iterable[Any]:
    """What an object refers to that may hold variables."""
    if isinstance(x, (list, tuple, set, frozenset)):
        return x
    if isinstance(x, dict):
        return x.values()
    if isinstance(x, functools.partial):
        return [x.func, *x.args, *x.keywords.values()]
    if isinstance(x, weakref.ref):
        return [x()]
    if isinstance(x, types.MethodType):
        return [x.__self__, x.__func__]
    if isinstance(x, types.FunctionType):
        cells = [c.cell_contents for c in x.__closure__ or () if _filled(c)]
        names = _global_names(x.__code__)
        return [*cells, *[x.__globals__[n] for n in names if n in x.__globals__]]
    try:
        return vars(x).values()
    except TypeError:  # no __dict__
        return ()


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018  # an empty cell raises
    except ValueError:
        return False
    return True


def _global_names(code: types.CodeType) -> list[str]:
    """The global names ``code`` (and code nested in it, lambdas and inner functions) uses."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_global_names(const))
    return names
