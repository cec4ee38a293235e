"""The lifting path every jaxvars transform shares: snapshot, run pure, collect, apply.

A transform turns a function that reads and assigns variables into a pure
function of their values, which a JAX transform can take. Where the
transform needs them before JAX traces the function (a loop's carry, the
branches' operands), ``Lifting`` guesses them and traces once (``jv.jit``
and ``jv.remat`` have their own one trace); the steps are:

1. **snapshot** the values of the variables the function touches, read
   through the enclosing frame (tracers inside an outer transform, arrays
   outside);
2. **run pure**: call the function in a fresh frame that owns those values,
   so its reads see them and its assignments are recorded, not applied;
3. **collect** the recorded new values, in a fixed order, as outputs;
4. **apply** them once the JAX transform has returned: to the enclosing
   frame if one is open, else to the variables themselves.

A Variable in the function's result is marked on the way out
(``mark_returned``) and swapped back in after the JAX transform
(``restore_returned``), so the caller gets the Variable object itself,
holding its new value after step 4, never a value frozen at trace time.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import jax
from jax.extend.core import jaxpr_as_fun

from . import _initial, _trace
from ._errors import JaxvarsValueError
from ._explain import CREATED_IN_BODY
from ._guess import expected_variables
from ._variable import Variable


def snapshot(variables: Sequence[Variable]) -> list[Any]:
    """The variables' current values, as the enclosing frame (if any) sees them."""
    return [v._value for v in variables]


def run_pure(
    fn: Callable[..., Any],
    variables: Sequence[Variable],
    values: Sequence[Any],
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    records: bool,
    defer: bool = False,
) -> tuple[Any, _trace.Frame]:
    """Call ``fn`` with ``variables`` bound to ``values``; returns (result, frame).

    The frame holds what ``fn`` assigned (``frame.assigned``) and, with
    ``records``, the variables it touched that were not given
    (``frame.discovered``); with ``defer``, those created from traced values
    (``frame.pending``, see ``_trace.Frame``).
    """
    with (
        _trace.run_of(fn),
        _trace.frame(dict(zip(variables, values, strict=True)), records=records) as frame,
    ):
        frame.pending = [] if defer else None
        out = fn(*args, **(kwargs or {}))
    return out, frame


Missed = _trace.Missed

# A guess, then the variables a trace missed, then (rarely) what that one missed;
# one more per function, as JAX stops at the first branch that misses.
_TRIES = 2
_REMEMBERED = 16  # misses remembered per function: a bound, as the guess's cost is


# The variables the latest trace of each function missed, by its code (a lambda
# made anew on every call shares them): the guess of the next call includes them.
# Weak on both sides, as jax.jit's caches are.
_missed: weakref.WeakKeyDictionary[Any, list[weakref.ref[Variable]]] = weakref.WeakKeyDictionary()


def _code(fn: Any) -> Any:
    """What ``_missed`` knows ``fn`` by (None: nothing, it cannot be weakly referred to)."""
    code = getattr(getattr(fn, "__func__", fn), "__code__", fn)
    try:
        weakref.ref(code)
    except TypeError:
        return None
    return code


class Lifting:
    """One call of a lifted transform: its functions traced once, over a guess.

    JAX needs a loop's carry, a branch's outputs and the mapped inputs before
    it traces the function, but which variables the function touches is only
    known once it has run. Instead of a first, abstract run to find out, the
    variables it will probably touch (``_guess``) are handed in as inputs: a
    loop carries them, branches take them as operands. What the function does
    not assign, it returns unchanged, and JAX turns such pass-through values
    into constants (``jax.lax.cond``, ``scan`` and ``while_loop`` all prune
    forwarded outputs), so a guess too big costs no copy.

    A variable the function assigns but was not given (or, with ``split``, one
    it reads whose iterations or lanes see slices) is ``Missed``: ``attempts``
    traces again with it added. The guess takes from the enclosing frame only
    what it can give without noting a read (``Frame.peek``), so an unused
    guess never makes an enclosing ``jv.jit`` retrace or depend on a variable;
    ``finish`` notes the reads that happened.
    """

    def __init__(
        self,
        what: str,
        functions: Sequence[Callable[..., Any]],
        args: Sequence[Any],
        *,
        split: Callable[[Variable], bool] | None = None,
        fits: Callable[[Variable, Any], bool] | None = None,
    ) -> None:
        self.what = what
        self.split = split  # whether a variable's iterations (lanes) see slices of it
        self.outer = _trace.current.get()
        self.values: dict[Variable, Any] = {}
        self.codes = [code for code in map(_code, functions) if code is not None]
        self.tries = _TRIES + len(functions)
        recent = {
            v: None
            for code in self.codes
            for ref in _missed.get(code, ())
            if (v := ref()) is not None
        }
        for variable in expected_variables(functions, args, list(recent)):
            # What a trace missed before is used: read it (the read is noted). Other
            # guesses are peeked, so an unused one leaves an enclosing jit alone.
            if self.outer is None or variable in recent:
                value = variable._value
            else:
                value = self.outer.peek(variable)
            if value is not _trace.MISSING and (fits is None or fits(variable, value)):
                self.values[variable] = value
        self.frames: dict[Any, _trace.Frame] = {}  # each function's latest trace

    def attempts(self, attempt: Callable[[list[Variable]], Any]) -> tuple[list[Variable], Any]:
        """``attempt(variables)`` (the guess), traced again while it misses variables;
        returns the variables it was given and its result."""
        variables = list(self.values)
        for _ in range(self.tries):
            try:
                return variables, attempt(variables)
            except Missed as more:
                if more.owner is not self:  # an enclosing transform's: it traces again
                    raise
                for code in self.codes:  # the next call's guess includes them, and earlier misses
                    known = [ref for ref in _missed.get(code, ()) if ref() is not None]
                    known += [weakref.ref(v) for v in more.variables]
                    _missed[code] = known[-_REMEMBERED:]
                variables += [v for v in more.variables if v not in self.values]
                self.values.update((v, v._value) for v in more.variables)  # read: it is used
        raise JaxvarsValueError(  # pragma: no cover - needs a function that keeps changing
            f"{self.what}: the variables it touches kept changing between traces; make them "
            "independent of the values it is traced with."
        )

    def inputs(self, variables: Sequence[Variable]) -> list[Any]:
        """The values ``variables`` enter the transform with."""
        return [self.values[v] for v in variables]

    def run(
        self,
        fn: Callable[..., Any],
        variables: Sequence[Variable],
        values: Sequence[Any],
        args: Any,
    ) -> tuple[Any, _trace.Frame]:
        """One trace of ``fn(*args)`` with ``variables`` supplied as ``values``."""
        with _trace.run_of(fn), _trace.frame({}, records=True) as frame:
            frame.supply = dict(zip(variables, values, strict=True))
            frame.lifting = self  # a split variable it was not given stops the trace
            out = fn(*args)
        self.frames[fn] = frame
        return out, frame

    def pure(
        self, fn: Callable[..., Any], variables: Sequence[Variable], *, mark: bool = True
    ) -> Callable[..., Any]:
        """``fn`` as ``(values, *args) -> (result, values at its end)`` of ``variables``,
        for one trace. With ``mark``, Variables in the result are marked (see module
        doc); loops, whose carry must keep its structure, pass ``mark=False``."""

        given = dict.fromkeys(variables)  # identity membership

        def pure(values: Sequence[Any], *args: Any) -> Any:
            out, frame = self.run(fn, variables, values, args)
            missed = [v for v in frame.assigned if v not in given]
            created = [v for v in missed if v in frame.created]
            if created:
                raise JaxvarsValueError(
                    CREATED_IN_BODY.format(what=self.what, name=created[0].name)
                )
            if missed:
                raise Missed(missed, self)
            ends = [frame.values.get(v, value) for v, value in zip(variables, values, strict=True)]
            return (mark_returned(out) if mark else out), ends

        return pure

    def assigned(self) -> list[Variable]:
        """What the latest traces of the functions assigned, in order."""
        merged: dict[Variable, None] = {}
        for frame in self.frames.values():
            merged.update(frame.assigned)
        return list(merged)

    def finish(self, ends: dict[Variable, Any]) -> None:
        """Apply the assignments (new values from ``ends``) and, inside an enclosing
        trace, note the variables the functions read there."""
        assigned = self.assigned()
        written = dict.fromkeys(assigned)  # identity membership
        if self.outer is not None:
            for frame in self.frames.values():
                for variable in frame.discovered:
                    if variable not in written:
                        variable._value  # noqa: B018  # the read, noted by the open frame
        apply(assigned, [ends[v] for v in assigned])


def computed(traced: Any, inputs: Sequence[Any], last: int) -> list[Any]:
    """The last ``last`` results of a traced computation (a closed jaxpr) on ``inputs``.

    Compiled, so XLA computes only what those need.
    """
    run = jaxpr_as_fun(traced)
    return jax.jit(lambda *xs: run(*xs)[-last:])(*inputs)


def settle(pending: list[Any], values: Sequence[Any]) -> None:
    """Give the variables a trace created from values it computed those values."""
    for (variable, attribute, _), value in zip(pending, values, strict=True):
        _initial.settle(variable, attribute, value)


def collect(frame: _trace.Frame, variables: Sequence[Variable]) -> list[Any]:
    """The values ``variables`` hold at the end of ``frame``, in order."""
    values = frame.values
    return [values[v] for v in variables]


def apply(variables: Sequence[Variable], values: Sequence[Any]) -> None:
    """Write transform outputs back: into the open frame, or into the variables."""
    for variable, value in zip(variables, values, strict=True):
        variable._write(value)


class _Returned:
    """A Variable in a transform's result: a pytree node with no leaves.

    It stays a marker through the JAX transform (a node rebuilt as a Variable,
    itself a pytree with a leaf, would break JAX's output bookkeeping), and
    ``restore_returned`` swaps it for the Variable afterwards. The reference is
    weak, so JAX caches that keep the output structure never keep the
    variable alive.
    """

    __slots__ = ("ref",)

    def __init__(self, variable: Variable) -> None:
        self.ref = weakref.ref(variable)

    def __eq__(self, other: object) -> bool:  # output structures compare by variable
        return isinstance(other, _Returned) and self.ref() is other.ref()

    def __hash__(self) -> int:
        return id(self.ref())


jax.tree_util.register_pytree_node(
    _Returned,
    lambda marked: ((), marked),
    lambda marked, _: marked,  # pyright: ignore[reportArgumentType]  # leafless, on purpose
)


def _is_variable(x: Any) -> bool:
    return isinstance(x, Variable)


def _is_marker(x: Any) -> bool:
    return isinstance(x, _Returned)


def mark_returned(out: Any, found: list[bool] | None = None) -> Any:
    """``out`` with each Variable replaced by a marker; ``found[0]`` is set if any was."""

    def mark(x: Any) -> Any:
        if not isinstance(x, Variable):
            return x
        if found is not None:
            found[0] = True
        return _Returned(x)

    return jax.tree_util.tree_map(mark, out, is_leaf=_is_variable)


def restore_returned(out: Any) -> Any:
    """``out`` with each marker replaced by its Variable, as the function returned it."""
    return jax.tree_util.tree_map(
        lambda x: x.ref() if isinstance(x, _Returned) else x, out, is_leaf=_is_marker
    )
