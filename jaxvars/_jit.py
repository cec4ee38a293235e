"""jv.jit: compile a function that reads and assigns variables, and cache the result.

How the cache works
-------------------
**Key.** ``cache_key`` is the one key function. A call whose arguments are
all arrays and objects (Variables, Modules, instances of plain classes)
keys by position: None for an array (jax.jit's own cache then tells shapes
and dtypes apart), ``id()`` for an object. Anything else (keywords,
containers, Python numbers, bools and strings, static arguments) keys by
pytree structure, the objects' ids and the static values.
An id can only be trusted while its object lives, so each entry watches the
objects in its key with weak references and is evicted when one dies.

**One trace.** On a miss ``fn`` is traced once (``_jit_trace``), given the
variables it is expected to touch as inputs; the trace tells which it read,
assigned and created, which modules' methods it ran and which collections
it read, and its jaxpr whether the computation can fail at run time (a
callback: such entries never donate, so a failure changes nothing). The
entry (``_jit_entry``) compiles that same trace. A variable the guess missed
(one the trace created with ``get_variable``, say) takes a second trace,
with it as an input; so does a retrace for new shapes that touches a
variable the entry lacks (Python control flow on state outside the
arguments: compiling it as a constant would freeze its value).

**Created from what the step computed.** A variable made from a value the
trace computed (an EMA's shadow of a weight the step just updated,
``jv.Variable(x)``) takes that value, and the trace runs as the call, as
``tf.function`` runs its first trace: the Python of later calls differs
(the variable exists), and only this trace did what the first call must do
(its random draws, for one). The next call traces again.

**Dependents.** The entry registers as a dependent of every variable it
touches, every module it uses and every collection it reads
(``_trace.depend``): changing a ``trainable`` flag or a module's
attributes, or a variable joining a collection, evicts exactly the entries
that depend on it, and nothing else.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, ParamSpec, TypeVar, overload

import jax
from jax.core import Tracer

from . import _lift, _retrace, _trace
from ._errors import JaxvarsTypeError, JaxvarsValueError, boundary
from ._explain import ASSIGNS_UNDER_RAW_TRANSFORM, CREATED_IN_TRACE, may_fail_at_run_time
from ._guess import expected_variables
from ._jit_entry import Entry
from ._jit_key import (
    as_tuple,
    by_identity,
    cache_key,
    flat_key,
    holder,
    is_traced,
    rebuilder,
    split_statics,
    where_named,
    with_slots,
)
from ._jit_trace import Rediscover, Trace
from ._module import Module
from ._store import Store
from ._variable import Variable

P = ParamSpec("P")
R = TypeVar("R")

_current_frame = _trace.current.get

# Traces of one call at most: a function whose variables keep changing between
# traces never settles.
_MAX_TRACES = 8


class CacheInfo(NamedTuple):
    """What a ``jv.jit`` function's cache did (``compiled.cache_info()``)."""

    traces: int  # runs of the function's Python (one per miss, two when a variable was missed)
    hits: int  # calls that ran compiled code without tracing
    misses: int  # calls that traced
    entries: int  # compiled signatures cached now


class _Stats:
    __slots__ = ("traces", "calls", "misses")

    def __init__(self) -> None:
        self.traces = self.calls = self.misses = 0


class Jitted:
    """The state behind a function compiled by ``jv.jit``: its cache and slow path."""

    def __init__(
        self,
        fn: Callable[..., Any],
        static_argnums: int | Sequence[int] = (),
        static_argnames: str | Sequence[str] = (),
        explain_retraces: bool = False,
        donate: bool = True,
        **jit_kwargs: Any,
    ) -> None:
        self._fn = fn
        self._name = getattr(fn, "__name__", repr(fn))
        self._static_argnums = as_tuple(static_argnums)
        self._static_argnames = as_tuple(static_argnames)
        for unsupported in ("donate_argnums", "donate_argnames", "in_shardings"):
            if unsupported in jit_kwargs:
                raise JaxvarsTypeError(
                    f"jv.jit does not take {unsupported}=: assigned variables are donated "
                    "automatically (see donate=), and arrays keep the placement they have (use "
                    "jax.device_put, or a variable's sharding=)."
                )
        if donate not in (True, False):
            raise JaxvarsTypeError(f"jv.jit's donate= is True or False, got {donate!r}.")
        self._donate = donate
        self._jit_kwargs = jit_kwargs
        self._cache: dict[Any, Entry] = {}
        self._stats = _Stats()
        self._explain = explain_retraces
        self._history = _retrace.history()  # signatures traced, for retrace explanations
        self._by_name = False  # looks variables up by name (get_variable): see _call
        # Weak references to the variables the latest trace touched or created:
        # the next trace (new shapes, another key) expects them.
        self._recent: list[weakref.ref] = []
        # One miss at a time: a thread must not run an entry whose first call
        # (the one creating its variables) is still giving them their values.
        self._miss_lock = threading.RLock()

    def cache_info(self) -> CacheInfo:
        stats = self._stats
        return CacheInfo(stats.traces, stats.calls - stats.misses, stats.misses, len(self._cache))

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _current_frame() is not None:
            # Already inside a jaxvars trace (nested jv.jit): the outer one compiles.
            return self._fn(*args, **kwargs)
        self._stats.calls += 1
        statics = ()
        if self._static_argnums or self._static_argnames:
            args, kwargs, statics = split_statics(
                args, kwargs, self._static_argnums, self._static_argnames, self._name
            )
        key, leaves, treedef = cache_key(args, kwargs, statics, self._name)
        if self._by_name:  # the same call under another scope or store gets other variables
            key = where_named(key)
        entry = self._cache.get(key)
        if entry is None:
            with self._miss_lock:
                entry = self._cache.get(key)
                if entry is None:
                    self._stats.misses += 1
                    # How to rebuild the arguments from dynamic leaves, holding objects
                    # weakly: compiled code must not keep the caller's objects alive.
                    layout = (tuple(map(holder, leaves)), rebuilder(treedef, statics), treedef)
                    entry, ran = self._discover(key, leaves, layout)
                    if ran:  # the trace was this call (see the module doc)
                        return ran[0]
        if entry.assigned and any(isinstance(x, Tracer) for x in leaves):
            # Under a raw jax.vmap/grad/jit the new values would be that
            # transform's tracers: they must never reach a variable.
            names = ", ".join(f"'{v.name}'" for v in entry.assigned_of(leaves)[:3])
            raise JaxvarsTypeError(ASSIGNS_UNDER_RAW_TRANSFORM.format(fn=self._name, names=names))
        try:
            return entry.run(leaves)
        except Rediscover as more:
            return self._retry(entry, more, leaves)

    def _retry(self, entry: Entry, more: Rediscover, source: Sequence[Any]) -> Any:
        """Trace again for an entry whose retrace touched more (or that asks for one)."""
        with self._miss_lock:
            if not more.touched:  # an entry that only asks for a trace: a miss not yet counted
                self._stats.misses += 1
            self._recent += [weakref.ref(v) for v in more.touched]
            new, ran = self._discover(entry.key, source, entry.layout, strict=True)
        return ran[0] if ran else new.run(source)

    def _discover(
        self, key: Any, leaves: Sequence[Any], layout: Any, strict: bool = False
    ) -> tuple[Entry, tuple[Any, ...]]:
        """Trace ``fn`` once for ``key`` and make its entry (see the module doc).

        Returns the entry, and ``(result,)`` if the trace ran as the call.
        With ``strict`` (the key was traced before), creating a variable is an
        error: it would be created on every trace.
        """
        # The trace sees the call's own arguments (objects stand in as Slots), so
        # JAX's tracing errors name fn's arguments as the user wrote them.
        args, kwargs = with_slots(leaves, layout[2])
        positions = {id(x): i for i, x in enumerate(leaves) if isinstance(x, Variable)}
        missed: list[Variable] = []  # what this call's earlier traces touched unsupplied
        for _ in range(_MAX_TRACES):
            recent = [v for v in (ref() for ref in self._recent) if v is not None]
            guess = expected_variables([self._fn], leaves, [*recent, *missed])
            trace = Trace(self, layout, [positions.get(id(v), v) for v in guess], [False])
            values = [v._array for v in trace.variables_of(leaves)]
            traced = jax.jit(trace.function).trace(*values, *args, **kwargs)
            frame, trace.frame = trace.frame, None  # held no longer: it refers to the objects
            assert frame is not None and frame.supply is not None
            touched = list(frame.discovered)
            self._recent = _remembered([*touched, *frame.created], positions)
            if strict and frame.created:
                raise JaxvarsValueError(
                    CREATED_IN_TRACE.format(fn=self._name, name=frame.created[0].name)
                )
            used = list(frame.used)
            if not self._by_name and any(isinstance(u, Store) for u in used):
                self._by_name = True  # from now on keyed by scope and store too (not flat)
                key = where_named(key)
            unsupplied = [v for v in touched if v not in frame.supply]
            if unsupplied and not frame.pending:  # the next trace has them as inputs
                missed += unsupplied
                strict = True  # and creates nothing
                continue
            call_args, call_kwargs = layout[1](leaves)
            touched_values = {v: v._array for v in touched if not v.is_abstract}
            record = self.remember(trace, call_args, call_kwargs, touched_values)  # once a miss
            if frame.pending:
                ran = self._run_as_call(trace, frame, values, args, kwargs)
                # The next call traces again, and must create nothing.
                return self._entry(key, leaves, layout, None, [], [], False, used), (ran,)
            assigned = list(frame.assigned)
            read = [v for v in touched if v not in frame.assigned]
            may_fail = may_fail_at_run_time(traced.jaxpr.jaxpr)
            entry = self._entry(key, leaves, layout, trace, assigned, read, may_fail, used)
            trace.expect(_spec(positions, assigned), entry)
            entry.record = record
            return entry, ()
        raise JaxvarsValueError(  # pragma: no cover - needs a function that keeps changing
            f"jv.jit({self._name}): the variables the function touches kept changing "
            "between traces; make the variables it uses depend only on its arguments' "
            "shapes and static arguments."
        )

    def remember(
        self, trace: Trace, args: Any, kwargs: Any, variables: dict[Variable, Any]
    ) -> _retrace.Record:
        """Record a trace's signature, first explaining (if asked) how it differs from
        the closest one traced before (the entry's own, for a retrace of ``trace``)."""
        statics = (self._static_argnums, self._static_argnames)
        record = _retrace.Record(_retrace.signature(self._fn, args, kwargs, variables, statics))
        if _retrace.enabled(self._explain):
            past = [trace.record] if trace.record is not None else list(self._history)
            _retrace.explain(self._fn, self._name, self._stats.calls, record.signature, past)
        self._history.append(record)
        trace.record = record
        return record

    def _run_as_call(
        self, trace: Trace, frame: _trace.Frame, values: list[Any], args: Any, kwargs: Any
    ) -> Any:
        """Run the trace just made as the call: give the variables it created from
        values it computed those values, apply its assignments, return its result
        (placed by ``jax.jit``'s placement keywords, as the compiled step's would be)."""
        placement = {k: v for k, v in self._jit_kwargs.items() if k in ("device", "backend")}
        out, deferred, new = jax.jit(trace.function, **placement)(*values, *args, **kwargs)
        jax.block_until_ready((deferred, new))  # a failure (a callback) changes nothing
        with _trace.STATE_LOCK:
            _lift.settle(frame.pending or [], deferred)
            _lift.apply(list(frame.assigned), new)
        if "out_shardings" in self._jit_kwargs:
            out = jax.device_put(out, self._jit_kwargs["out_shardings"])
        return _lift.restore_returned(out)

    def _entry(
        self,
        key: Any,
        leaves: Sequence[Any],
        layout: Any,
        trace: Trace | None,
        assigned: list[Variable],
        read: list[Variable],
        may_fail: bool,
        used: list[Any],
    ) -> Entry:
        """Make, cache and watch the entry for ``key``."""
        positions = {id(x): i for i, x in enumerate(leaves) if isinstance(x, Variable)}
        entry = Entry(self, key, layout, trace, _spec(positions, assigned), may_fail, leaves)
        self._cache[key] = entry
        objects = [x for x in leaves if not is_traced(x) and by_identity(x)]
        # A module's submodules too: its methods may read their attributes
        # (`self.dropout.rate`) without running any of their methods.
        inner = [m for x in (*used, *objects) if isinstance(x, Module) for m in x.submodules]
        _trace.depend(entry, [*assigned, *read, *used, *objects, *inner])

        entry_ref = weakref.ref(entry)

        def evict(_: Any) -> None:
            live = entry_ref()
            if live is not None:
                live.evict()

        # When an argument object dies, its compiled code goes too (and its id,
        # part of the key, may be reused by a new object).
        stores = [u for u in used if isinstance(u, Store)]  # keyed by id, like objects
        entry.guards = [weakref.ref(x, evict) for x in (*objects, *stores)]
        return entry


def _remembered(variables: list[Variable], arguments: dict[int, int]) -> list[weakref.ref]:
    """Weak references to the variables the next trace should expect, for another key
    too: not the arguments' (a Variable argument, a Module's), which the guess finds in
    that call's own arguments; holding them would keep another call's model alive."""
    kept = [v for v in variables if v._held_by is None and id(v) not in arguments]
    return [weakref.ref(v) for v in dict.fromkeys(kept)]


def _spec(positions: dict[int, int], variables: list[Variable]) -> list[Variable | int]:
    """Variable arguments by their position in the call's leaves (never held), others as is."""
    return [positions.get(id(v), v) for v in variables]


@overload
def jit(fn: Callable[P, R], **jit_kwargs: Any) -> Callable[P, R]: ...
@overload
def jit(fn: None = None, **jit_kwargs: Any) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def jit(fn: Callable[..., Any] | None = None, **jit_kwargs: Any) -> Any:
    """Compile ``fn`` with ``jax.jit``, letting it read and assign any variable it reaches.

    ``fn`` may use variables from closures, the active store and scopes, and
    Module or Variable arguments (also nested in lists and dicts). After each
    call every assignment is visible, as if ``fn`` had run eagerly. New
    variable values and same-shaped inputs reuse the compiled code. A
    Variable that ``fn`` returns comes back as itself, holding its new value.

    Compiling a new signature runs ``fn`` once, as ``jax.jit`` does (twice when
    that trace created variables with ``get_variable`` that it then used, or
    reached a variable in a way jaxvars could not foresee); Python side effects
    happen at those times only. ``compiled.cache_info()`` counts traces, hits,
    misses and entries. A variable created from a value ``fn`` computed starts from
    that value, as eagerly. Changing an attribute of a Module the function
    used (``layer.deterministic = True``) retraces once. Old buffers of
    assigned variables are donated (a step then needs one copy of them, not
    two), unless something else still holds them (an array taken from
    ``v.value`` before the call stays valid). If ``fn`` raises, while
    tracing or while running (a callback), no variable changes.
    Calls from several threads are safe: each runs as one atomic step.

    Args:
        fn: The function; also usable as ``@jv.jit`` or ``@jv.jit(static_argnums=...)``.
        **jit_kwargs: ``static_argnums``, ``static_argnames`` and ``jax.jit``'s
            other keywords (``device``, ``backend``, ``out_shardings``,
            ``keep_unused``, ``compiler_options``, ...), and these two of jaxvars':

    Other Parameters:
        explain_retraces (bool): Log a WARNING on the ``jaxvars`` logger at each retrace,
            saying what changed (also on while JAX's ``jax_explain_cache_misses`` is).
        donate (bool): Whether steps donate the old buffers of the variables they
            assign (the default). ``False`` compiles faster (XLA compiles a
            donating step 4-18% more slowly on CPU at 600-2,000 variables) but
            a step then needs two copies of what it assigns.

    Returns:
        A callable with ``fn``'s signature.

    Example:
        >>> import jaxvars as jv
        >>> counter = jv.Variable(0, name="counter")
        >>> @jv.jit
        ... def tick(step):
        ...     counter.assign_add(step)
        ...     return counter * 10
        >>> int(tick(2)), int(tick(3)), int(counter)
        (20, 50, 5)
    """
    if fn is None:
        return functools.partial(jit, **jit_kwargs)
    jitted = Jitted(fn, **jit_kwargs)
    cache, slow, retry, stats = jitted._cache, jitted._call, jitted._retry, jitted._stats

    # A plain function, not an object with __call__: measured, calling an
    # instance costs several microseconds more per step on 2 cores. It also
    # binds as a method when it decorates one.
    @functools.wraps(fn)
    def compiled(*args: Any, **kwargs: Any) -> Any:
        # The common call, step(model, x, y) seen before: a flat key. Another
        # object's id, or a non-array argument, just misses and takes the slow
        # path, which keys properly.
        if not kwargs and _current_frame() is None:
            entry = cache.get(flat_key(args))
            if entry is not None:
                stats.calls += 1
                try:
                    return entry.run(args)
                except Rediscover as more:
                    return retry(entry, more, args)
        return slow(args, kwargs)

    # JAX's boundary: an error raised in fn shows a traceback without jaxvars'
    # and JAX's frames (measured: no cost per call beyond one Python frame).
    compiled = boundary(compiled)
    compiled._jitted = jitted  # type: ignore[attr-defined]  # for introspection and tests
    compiled.cache_info = jitted.cache_info  # type: ignore[attr-defined]
    return compiled
