"""The one trace of a jv.jit function per signature, and the guess that makes it one.

jax.jit needs the values of every variable a function reads as inputs, but
which variables those are is only known once the function has run. Tracing
twice (once to find them, once with them as inputs) doubled the first call's
tracing time. Instead the trace is given, as inputs, the variables the
function is *expected* to touch (``_guess.expected_variables``: those of its
arguments, of the objects its code refers to, and those the previous trace
of the same function touched), and a read takes its traced value from that
supply. The trace so made is the one compiled: the entry's ``jax.jit`` calls
the same function on the same abstract inputs, which JAX's trace cache
answers without running the user's Python again.

Only a variable outside the supply (created by this very trace, or reached in
a way the guess missed) needs a second trace, with it added (``Rediscover``).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from . import _lift, _trace
from ._errors import JaxvarsValueError
from ._explain import CREATED_IN_TRACE, control_flow_explained
from ._jit_key import from_call, from_slots
from ._variable import Variable


class Rediscover(Exception):
    """Raised out of a trace that touched variables its signature lacks."""

    def __init__(self, frame: _trace.Frame | None) -> None:
        super().__init__("internal: retrace with more variables")
        self.touched = list(frame.discovered) if frame is not None else []


class Trace:
    """``fn`` as a pure function of (supplied variable values, the call's arguments).

    ``function(*values, *args, **kwargs)`` returns ``(result, deferred values,
    assigned values)``: one positional input per supplied variable (so that the
    entry donates exactly the assigned ones), then the call's arguments with
    each untraced leaf (an object, a static value) replaced by a ``Slot``. Until ``expect``
    is called (discovery) it returns the values of what it assigned, in
    order, and ``frame`` tells what it touched; afterwards (a retrace by the
    entry's ``jax.jit``, for new shapes) it returns exactly the expected
    assignments and raises ``Rediscover`` if it touched anything else.
    """

    def __init__(
        self, jitted: Any, layout: Any, supplied: list[Variable | int], returns: list[bool]
    ) -> None:
        self.supplied = supplied  # Variables, or positions of Variable arguments
        self.returns = returns  # [True] once a trace returned a Variable
        self.variables_of = from_call(supplied)
        self.frame: _trace.Frame | None = None  # the latest trace's
        self.record: Any = None  # the latest trace's signature (see _retrace)
        # After discovery, what it assigns (a from_call spec); then a retrace (new
        # shapes) may read any supplied variable, whose value is a real input.
        self.expected: list[Variable | int] | None = None
        self.entry: Any = None  # a weak reference to the entry compiling it
        fn, name = jitted._fn, jitted._name
        holders, rebuild, treedef = layout
        trace = self

        n = len(supplied)

        def function(*inputs: Any, **kwargs: Any) -> Any:
            values, args = inputs[:n], inputs[n:]
            jitted._stats.traces += 1
            if trace.expected is not None:  # a retrace for new shapes: a miss of its own
                jitted._stats.misses += 1
            objects = [None if h is None else h() for h in holders]
            leaves = from_slots(args, kwargs, objects, treedef)
            supply = dict(zip(trace.variables_of(leaves), values, strict=True))
            call_args, call_kwargs = rebuild(leaves)
            with (
                _trace.pass_of(jitted),
                control_flow_explained(name),
                _trace.frame({}, records=True) as frame,
            ):
                frame.supply, frame.pending = supply, []
                if trace.expected is None:  # discovery reads it (and then drops it)
                    trace.frame = frame
                try:
                    out = fn(*call_args, **call_kwargs)
                except BaseException:
                    _lift.settle(frame.pending, [None] * len(frame.pending))
                    raise
            assigned: Iterable[Variable] = frame.assigned
            if trace.expected is not None:
                if frame.created:
                    raise JaxvarsValueError(
                        CREATED_IN_TRACE.format(fn=name, name=frame.created[0].name)
                    )
                assigned = from_call(trace.expected)(leaves)
                expected = dict.fromkeys(assigned)  # identity membership
                if any(v not in supply for v in frame.discovered) or any(
                    v not in expected for v in frame.assigned
                ):
                    raise Rediscover(frame)
                touched = {v: supply[v] for v in frame.discovered}
                entry = trace.entry() if trace.entry is not None else None
                if entry is not None:  # it depends on what this shape's code touched too
                    _trace.depend(entry, list(touched))
                jitted.remember(trace, call_args, call_kwargs, touched)
            values_now = frame.values
            new = [values_now[v] if v in values_now else supply[v] for v in assigned]
            deferred = [traced for *_, traced in frame.pending]
            return _lift.mark_returned(out, returns), deferred, new

        statics = jitted._static_argnums or jitted._static_argnames
        # In the flat form only the traced arguments are inputs (see with_slots).
        traced = [i for i, h in enumerate(holders) if h is None] if treedef is None else None
        self.function = _named_like(function, fn, n, statics, traced)

    def expect(self, assigned: list[Variable | int], entry: Any) -> None:
        """From now on (retraces for new shapes, for ``entry``) assign exactly ``assigned``
        (a spec: Variables, or positions of Variable arguments)."""
        self.expected, self.entry = assigned, weakref.ref(entry)


def _named_like(
    function: Callable[..., Any],
    fn: Callable[..., Any],
    n: int,
    statics: Any,
    traced: list[int] | None,
) -> Any:
    """``function`` wearing ``fn``'s name, source line and signature (after ``n``
    variable values; only the ``traced`` positional parameters, if given), so that
    JAX's tracing errors name the user's function and arguments."""
    function.__name__ = getattr(fn, "__name__", function.__name__)
    function.__qualname__ = getattr(fn, "__qualname__", function.__qualname__)
    function.__wrapped__ = fn  # type: ignore[attr-defined]  # JAX's source line follows it
    only = inspect.Parameter.POSITIONAL_ONLY
    first = [inspect.Parameter(f"_jaxvars_variable_{i}", only) for i in range(n)]
    try:
        # With static arguments taken out, fn's parameters would misname the rest.
        parameters = [] if statics else list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin or a signature-less callable
        parameters = []
    if parameters and traced is not None:
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        positional = [p for p in parameters if p.kind in kinds]
        names = [positional[i].name if i < len(positional) else f"args_{i}" for i in traced]
        parameters = [inspect.Parameter(name, only) for name in names]
    if not parameters:
        parameters = [
            inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
            inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD),
        ]
    try:
        signature = inspect.Signature([*first, *parameters])
    except ValueError:  # a parameter named like ours: JAX then names arguments by position
        return function
    function.__signature__ = signature  # type: ignore[attr-defined]
    return function
