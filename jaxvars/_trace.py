"""Frames: where variables read and write while jv.jit, jv.grad or jv.fori_loop trace.

Outside any transform a variable reads and writes its own array. Inside one,
a frame stands between: it holds the traced value of each variable it owns,
records every assignment instead of applying it, and (for jit and loop frames)
notes each variable the function touches that it did not know about, so the
transform can make it an input. Frames nest (a grad inside a loop inside a
jit); a read walks outwards until some frame knows the variable.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import jax
from jax.core import Tracer
from jax.extend.core import get_opaque_trace_state

from ._errors import TRACER_ASSIGN, JaxvarsTypeError

if TYPE_CHECKING:
    from ._variable import Variable

current: contextvars.ContextVar[Frame | None] = contextvars.ContextVar(
    "jaxvars_frame", default=None
)


class Frame:
    """One transform's view of the variables while it traces.

    Attributes:
        values: Traced (or recorded) value of each variable this frame owns.
        assigned: Variables assigned in this frame, in order (a dict as ordered set).
        discovered: Variables read or assigned that were not given to the frame.
        created: Variables created while the frame (or one inside it) was open.
        records: Whether unknown variables are recorded (jit and loop frames);
            a grad frame lets them through to its parent.
    """

    __slots__ = ("values", "assigned", "discovered", "created", "records", "parent", "trace")

    def __init__(self, values: dict[Variable, Any], *, records: bool) -> None:
        self.values = values
        self.assigned: dict[Variable, None] = {}
        self.discovered: dict[Variable, None] = {}
        self.created: list[Variable] = []
        self.records = records
        self.parent = current.get()
        self.trace = get_opaque_trace_state()

    def read(self, variable: Variable) -> Any:
        frame: Frame | None = self
        while frame is not None:
            value = frame.values.get(variable, _MISSING)
            if value is not _MISSING:
                return value
            if frame.records:
                # Unknown to this jit/loop: take the value from outside (a
                # constant, or an outer frame's tracer) and remember it, so the
                # transform can retrace with the variable as an input.
                value = frame.parent.read(variable) if frame.parent else _concrete(variable)
                frame.values[variable] = value
                frame.discovered[variable] = None
                return value
            frame = frame.parent
        return _concrete(variable)

    def write(self, variable: Variable, value: Any) -> None:
        if isinstance(value, Tracer) and not self._owns_current_trace():
            raise JaxvarsTypeError(TRACER_ASSIGN.format(op="assign", name=variable.name))
        if variable not in self.values and self.records:
            self.discovered[variable] = None
        self.values[variable] = value
        self.assigned[variable] = None

    def _owns_current_trace(self) -> bool:
        # An assignment from inside a raw jax.jit/vmap/lax body nested in this
        # transform would leak that body's tracer: only our own traces may write.
        state = get_opaque_trace_state()
        frame: Frame | None = self
        while frame is not None:
            if frame.trace == state:
                return True
            frame = frame.parent
        return False


_MISSING = object()


def _concrete(variable: Variable) -> Any:
    """The variable's own array, handed to traced code (which may capture it)."""
    LAST[0] = None  # so jv.jit checks before donating it
    return variable._array


# Bumped whenever something that compiled code depends on changes outside any
# trace (a trainable flag, a module's variables): jv.jit then retraces.
EPOCH = [0]


def bump_epoch() -> None:
    EPOCH[0] += 1


# The outputs of the latest jv.jit call, as (entry token, arrays), until any
# variable's array is read or written outside a transform (which resets it to
# None). While it is set, those arrays are the variables' current arrays and
# nobody else holds them: the next call of that entry passes them straight in
# and donates them, skipping a gather and a reference check. One slot for the
# whole process, cleared at the first touch, so it never keeps memory alive.
LAST: list[Any] = [None]


@contextlib.contextmanager
def frame(values: dict[Variable, Any], *, records: bool) -> Iterator[Frame]:
    """Open a frame owning ``values`` for the duration of a trace."""
    opened = Frame(values, records=records)
    token = current.set(opened)
    try:
        yield opened
    finally:
        current.reset(token)
        if opened.parent is not None:
            opened.parent.created.extend(opened.created)


def note_created(variable: Variable) -> None:
    """Tell the open frame, if any, that ``variable`` was created inside it."""
    frame = current.get()
    if frame is not None:
        frame.created.append(variable)


@contextlib.contextmanager
def outside() -> Iterator[None]:
    """Run eagerly on concrete values, as if no transform were tracing.

    Variable creation uses it, so that initial values (and the random keys
    drawn for them) are concrete even when a variable is created inside jv.jit.
    """
    if current.get() is None:
        # Already eager. ensure_compile_time_eval would only slow initializers
        # down (it runs them primitive by primitive, with full-size temporaries).
        yield
        return
    token = current.set(None)
    try:
        with jax.ensure_compile_time_eval():
            yield
    finally:
        current.reset(token)
