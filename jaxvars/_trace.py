"""Frames, the state lock and dependents: what every transform shares about variables.

Outside any transform a variable reads and writes its own array. Inside one,
a frame stands between: it holds the traced value of each variable it owns,
records every assignment instead of applying it, and (for jit and loop frames)
notes each variable the function touches that it did not know about, so the
transform can make it an input. Frames nest (a grad inside a loop inside a
jit); a read walks outwards until some frame knows the variable.

Two process-wide mechanisms live here too:

- ``STATE_LOCK`` makes each eager read, each eager assignment and each call of
  compiled code atomic with respect to the others, so a buffer that jv.jit
  donates is never one that another thread is about to be handed;
- dependents: compiled code registers itself on the variables, modules and collections it
  depends on, and a change to one of them (a ``trainable`` flag, a module's
  attribute) evicts only that code.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import jax
from jax.core import Tracer
from jax.extend.core import get_opaque_trace_state

from ._errors import CONCRETE_ASSIGN, TRACER_ASSIGN, JaxvarsTypeError
from ._jax_private import ArrayImpl

if TYPE_CHECKING:
    from ._variable import Variable

current: contextvars.ContextVar[Frame | None] = contextvars.ContextVar(
    "jaxvars_frame", default=None
)

# Reentrant: an assignment made while compiled code is being traced (a random
# draw in an initializer, say) happens in the thread that holds it.
STATE_LOCK = threading.RLock()

# The trace state outside every JAX transform (JAX's evaluation trace is one
# object for all threads). Reading it starts no backend.
_TOP_LEVEL = get_opaque_trace_state()


# True inside outside(): code jaxvars itself runs eagerly in the middle of a trace.
_outside: contextvars.ContextVar[bool] = contextvars.ContextVar("jaxvars_outside", default=False)


def at_top_level() -> bool:
    """Whether code runs eagerly: no JAX transform is tracing it, or it is in ``outside()``."""
    return _outside.get() or get_opaque_trace_state() == _TOP_LEVEL


class Frame:
    """One transform's view of the variables while it traces.

    Attributes:
        values: Traced (or recorded) value of each variable this frame owns.
        assigned: Variables assigned in this frame, in order (a dict as ordered set).
        discovered: Variables read or assigned that were not given to the frame.
        created: Variables created while the frame (or one inside it) was open.
        used: Modules whose methods ran and collections read in the frame: the
            structure compiled code depends on (a change evicts it).
        records: Whether unknown variables are recorded (jit and loop frames);
            a grad frame lets them through to its parent.
    """

    __slots__ = (
        "values",
        "assigned",
        "discovered",
        "created",
        "used",
        "records",
        "parent",
        "trace",
        "pending",
        "supply",
        "lifting",
    )

    def __init__(self, values: dict[Variable, Any], *, records: bool) -> None:
        self.values = values
        self.assigned: dict[Variable, None] = {}
        self.discovered: dict[Variable, None] = {}
        self.created: list[Variable] = []
        self.used: dict[Any, None] = {}
        self.records = records
        self.parent = current.get()
        self.trace = get_opaque_trace_state()
        # For the frame of a whole trace (jv.jit's discovery, jv.eval_shape):
        # (variable, attribute, traced value) of variables created from values
        # the trace computed; the transform computes them after the trace.
        self.pending: list[tuple[Variable, str, Any]] | None = None
        # For the trace of jv.jit and the lifted transforms: traced values of the
        # variables it expects the function to touch, taken (and recorded as
        # discovered) on first use.
        self.supply: dict[Variable, Any] | None = None
        # For a lifted transform's trace (``_lift.Lifting``): variables whose
        # iterations or lanes see slices (``lifting.split``) cannot be read from
        # outside, whole; such a read stops the trace (``Missed``) at once.
        self.lifting: Any = None

    def read(self, variable: Variable) -> Any:
        frame, value = self._lookup(variable)
        if value is not MISSING:
            return value
        if frame is None:
            return concrete(variable)
        # Unknown to this jit/loop: take the value from its supply or from outside
        # (a constant, or an outer frame's tracer) and remember it, so the
        # transform can retrace with the variable as an input.
        value = frame.supply.get(variable, MISSING) if frame.supply else MISSING
        if value is MISSING:
            lifting = frame.lifting
            if lifting is not None and lifting.split is not None and lifting.split(variable):
                raise Missed([variable], lifting)
            value = frame.parent.read(variable) if frame.parent else concrete(variable)
        frame.values[variable] = value
        frame.discovered[variable] = None
        return value

    def peek(self, variable: Variable) -> Any:
        """What ``read`` would give, without noting anything: ``MISSING`` where the read
        would make the variable newly touched (an input a jit or loop was not given).

        A lifted transform guessing its inputs takes them so: a guessed variable its
        function never uses must not make the enclosing jv.jit retrace or depend on it.
        """
        frame, value = self._lookup(variable)
        if value is not MISSING:
            return value
        if frame is None:
            return concrete(variable)
        return frame.supply.get(variable, MISSING) if frame.supply else MISSING

    def _lookup(self, variable: Variable) -> tuple[Frame | None, Any]:
        """The value of the innermost frame that holds ``variable``, or ``MISSING`` and
        the first frame outwards that records variables it does not hold (None: none)."""
        frame: Frame | None = self
        while frame is not None:
            value = frame.values.get(variable, MISSING)
            if value is not MISSING or frame.records:
                return frame, value
            frame = frame.parent
        return None, MISSING

    def write(self, variable: Variable, value: Any) -> None:
        if not self._owns_current_trace():
            # Inside a raw jax.jit/vmap/lax body nested in this transform: a
            # tracer would leak, and a concrete value would be assigned once,
            # when that body is traced, and silently never again.
            message = TRACER_ASSIGN if isinstance(value, Tracer) else CONCRETE_ASSIGN
            raise JaxvarsTypeError(message.format(op="assign", name=variable.name))
        if variable not in self.values and self.records:
            self.discovered[variable] = None
        self.values[variable] = value
        self.assigned[variable] = None

    def _owns_current_trace(self) -> bool:
        state = get_opaque_trace_state()
        frame: Frame | None = self
        while frame is not None:
            if frame.trace == state:
                return True
            frame = frame.parent
        return False


MISSING = object()  # no value (see Frame.peek)


class Missed(Exception):
    """A lifted transform's trace needed variables it was not given as inputs: its
    ``Lifting`` (``owner``) traces again with them."""

    def __init__(self, variables: list[Variable], owner: Any) -> None:
        super().__init__("internal: trace again with these as inputs")
        self.variables, self.owner = variables, owner


def concrete(variable: Variable) -> Any:
    """The variable's own array, handed out eagerly or to traced code (which may capture it)."""
    with STATE_LOCK:  # never a buffer that a jv.jit step in another thread donates
        LAST[0] = None  # held outside jaxvars now: jv.jit checks before donating it
        array = variable._array
    if type(array) is not ArrayImpl:  # an abstract variable (jv.eval_shape)
        if abstract.get():  # inside jv.eval_shape everything is abstract: a shape will do
            return jax.numpy.zeros(array.shape, array.dtype)
        raise variable._abstract_error()
    return array


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
            opened.parent.used.update(opened.used)


# The axis names of the jv.vmap lanes being traced, outermost first: random
# draws fold in each lane's index, so that lanes draw differently.
lanes: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar("jaxvars_lanes", default=())


# Variables created eagerly while jv.vmap builds an ensemble's other members.
_creations: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "jaxvars_creations", default=None
)


def note_created(variable: Variable) -> None:
    """Tell the open frame, if any, that ``variable`` was created inside it."""
    frame = current.get()
    if frame is not None:
        frame.created.append(variable)
    collected = _creations.get()
    if collected is not None:
        collected.append(variable)


@contextlib.contextmanager
def collecting_creations() -> Iterator[list[Any]]:
    """Collect the variables created (eagerly) inside, in order (an enclosing
    collection gets them too)."""
    created: list[Any] = []
    outer = _creations.get()
    token = _creations.set(created)
    try:
        yield created
    finally:
        _creations.reset(token)
        if outer is not None:
            outer.extend(created)


def note_used(obj: Any) -> None:
    """Tell the open frame, if any, that it used ``obj``: a module (a method ran)
    or a collection (it was read). Compiled code depends on what it used."""
    frame = current.get()
    if frame is not None:
        frame.used[obj] = None


class Pass:
    """One run of a function's Python in a trace: a jv.jit pass (discovery,
    trace or a retrace), or one run of a lifted transform's function.

    The function's Python runs once per pass, as TF1 graph-building code ran
    once, so every pass must build the same thing: a variable an earlier pass
    made with get_variable (``owner`` made it) is got again instead of failing
    with "already exists" (the TF tower loop inside a jitted step, a
    ``dynamic_rnn`` cell in a scan body), and the n-th scope a pass names with
    ``default_name`` gets the name the first pass of the same ``names`` got.
    """

    __slots__ = ("owner", "names", "scopes_named", "lifted_calls")

    def __init__(self, owner: Any, names: Any = None) -> None:
        self.owner = owner  # who makes variables: the jv.jit function, or an eager call
        self.names = owner if names is None else names  # whose default names it replays
        self.scopes_named = 0  # default_name scopes opened so far in this pass
        self.lifted_calls = 0  # lifted transforms called so far in this pass


current_pass: contextvars.ContextVar[Pass | None] = contextvars.ContextVar(
    "jaxvars_pass", default=None
)


@contextlib.contextmanager
def pass_of(owner: Any) -> Iterator[None]:
    """Run one pass of ``owner``'s function (see ``Pass``)."""
    token = current_pass.set(Pass(owner))
    try:
        yield
    finally:
        current_pass.reset(token)


class _Key:
    """Stands for a series of passes (a weakly referable dictionary key)."""

    __slots__ = ("__weakref__",)


# Each series' sub-series: the same object for the n-th lifted call of every
# pass of a function, so its passes replay the names the first one made.
_series: weakref.WeakKeyDictionary[Any, dict[Any, _Key]] = weakref.WeakKeyDictionary()
_series_lock = threading.Lock()


def _sub_series(parent: Any, key: Any) -> _Key:
    with _series_lock:
        return _series.setdefault(parent, {}).setdefault(key, _Key())


# Inside a lifted transform's call: (owner, its series, {function: index}).
_lifted: contextvars.ContextVar[tuple[Any, Any, dict[Any, int]] | None] = contextvars.ContextVar(
    "jaxvars_lifted", default=None
)


@contextlib.contextmanager
def lifted_call() -> Iterator[None]:
    """One call of a lifted transform, whose functions each run once per trace.

    Outside jv.jit the call is its own owner; inside, the enclosing pass's
    owner makes the variables, and the call is the n-th of that pass.
    """
    outer = current_pass.get()
    if outer is None:
        owner = names = _Key()
    else:
        owner, names = outer.owner, _sub_series(outer.names, outer.lifted_calls)
        outer.lifted_calls += 1
    token = _lifted.set((owner, names, {}))
    try:
        yield
    finally:
        _lifted.reset(token)


@contextlib.contextmanager
def run_of(fn: Any) -> Iterator[None]:
    """One run of ``fn``, a lifted transform's function, as one pass (see ``Pass``).

    A lifted transform may run its function more than once (to find the
    variables, then when JAX traces it): every run builds the same thing.
    """
    call = _lifted.get()
    if call is None:
        yield
        return
    owner, names, functions = call
    index = functions.setdefault(fn, len(functions))
    # The function's own code (a jv.grad inside it, say) is part of this pass.
    run, lifted = current_pass.set(Pass(owner, _sub_series(names, index))), _lifted.set(None)
    try:
        yield
    finally:
        _lifted.reset(lifted)
        current_pass.reset(run)


# True inside jv.eval_shape: variables created there are abstract, and nothing
# (not even an initial value) is computed.
abstract: contextvars.ContextVar[bool] = contextvars.ContextVar("jaxvars_abstract", default=False)


@contextlib.contextmanager
def outside() -> Iterator[None]:
    """Run eagerly on concrete values, as if no transform were tracing.

    Variable creation uses it, so that initial values (and the random keys
    drawn for them) are concrete even when a variable is created inside jv.jit.
    Inside jv.eval_shape it changes nothing: there values stay abstract.
    """
    if current.get() is None or abstract.get():
        # Already eager. ensure_compile_time_eval would only slow initializers
        # down (it runs them primitive by primitive, with full-size temporaries).
        yield
        return
    outer = _outer.set((current.get(), get_opaque_trace_state()))
    token, eager = current.set(None), _outside.set(True)
    no_lanes = lanes.set(())  # one value for all jv.vmap lanes, drawn once
    try:
        with jax.ensure_compile_time_eval():
            yield
    finally:
        lanes.reset(no_lanes)
        _outside.reset(eager)
        current.reset(token)
        _outer.reset(outer)


# The frame and trace state that outside() stepped out of.
_outer: contextvars.ContextVar[tuple[Frame | None, Any]] = contextvars.ContextVar(
    "jaxvars_outer", default=(None, None)
)


def deferring_frame() -> Frame | None:
    """The frame that can compute a traced value for a variable being created.

    Only the frame of a whole trace (jv.jit's discovery, jv.eval_shape) can:
    a value traced there is one of that trace's results. A value traced by a
    transform nested inside (a jv.cond branch, a raw jax.vmap) is not.
    """
    frame, state = current.get(), get_opaque_trace_state()
    if frame is None:
        frame, state = _outer.get()
    # A frame of the same trace inside it (jv.grad building a module) defers to it.
    while frame is not None and frame.pending is None and frame.trace == state:
        frame = frame.parent
    if frame is not None and frame.pending is not None and frame.trace == state:
        return frame
    return None


# -- dependents: which compiled code a change makes stale ------------------------------


class Dependent(Protocol):
    def evict(self, why: str | None = None) -> None: ...


# {id(variable or module): (weak reference to it, the compiled entries that depend
# on it)}. Keyed by id, not by the object: Variables compare elementwise, so a
# WeakKeyDictionary could not tell two of them apart.
_dependents: dict[int, tuple[weakref.ref, weakref.WeakSet[Any]]] = {}
# Re-entrant: a watched object can die while the lock is held (the garbage
# collector may run on any allocation inside depend), and its weak reference's
# callback, run at once on the same thread, takes the lock again. Measured: a
# plain Lock deadlocked a CI run this way.
_dependents_lock = threading.RLock()


def depend(entry: Dependent, objects: list[Any]) -> None:
    """Register ``entry`` to be evicted when any of ``objects`` changes."""
    with _dependents_lock:
        for obj in objects:
            key = id(obj)
            slot = _dependents.get(key)
            if slot is None or slot[0]() is not obj:
                slot = _dependents[key] = (weakref.ref(obj, _forget(key)), weakref.WeakSet())
            slot[1].add(entry)


def _forget(key: int) -> Any:
    def forget(ref: weakref.ref) -> None:
        with _dependents_lock:
            slot = _dependents.get(key)
            if slot is not None and slot[0] is ref:
                del _dependents[key]

    return forget


def changed(obj: Any, why: str | None = None) -> None:
    """``obj`` changed in a way compiled code depends on: evict that code.

    ``why`` says what changed, in the user's terms (a retrace explanation
    repeats it); callers build it only once they know ``obj`` is watched
    (``watched``), so an unwatched change costs nothing.

    Changes made while a jaxvars transform traces (a module building itself, a
    flag a traced step sets) are trace-time side effects, as in jax.jit: they
    evict nothing (a step setting an attribute it reads would retrace itself,
    and two steps setting a flag each way would retrace each other, forever).
    """
    if current.get() is not None or id(obj) not in _dependents:  # the common case: unwatched
        return
    with _dependents_lock:
        slot = _dependents.get(id(obj))
        if slot is None or slot[0]() is not obj:
            return
        del _dependents[id(obj)]
    for entry in list(slot[1]):
        entry.evict(why)


def watched(obj: Any) -> bool:
    """Whether a change of ``obj`` would evict compiled code (outside a trace)."""
    return current.get() is None and id(obj) in _dependents
