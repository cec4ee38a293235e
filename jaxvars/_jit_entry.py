"""One cache entry of a jv.jit function: compiled code for one key, and its hot path.

An entry holds the two ``jax.jit`` objects (donating and not) of its key's
``Trace`` function (``_jit_trace``): called on the abstract inputs it was
traced with, JAX's trace cache answers, so compiling never runs the user's
Python again. Variables passed as arguments are not held by
the entry but taken from each call's leaves, so compiled code never keeps a
caller's variables or modules alive.

**Donation.** Assigned variables' old buffers are donated to the step
(unless ``jv.jit(donate=False)``), unless someone else still
holds one (a reference count above ours), in which case that call copies.
``_trace.LAST`` remembers the outputs of the latest call; while no variable
has been touched since, the next call of the same entry (its token) passes
them straight back in, skipping the gather and the count. Everything from
the gather to the write-back holds ``_trace.STATE_LOCK``, as do eager reads
and writes, so another thread can never be handed a buffer that is being
donated, and concurrent steps never lose an update.
"""

from __future__ import annotations

import operator
import sys
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import jax

from . import _lift, _trace
from ._explain import device_error
from ._jit_key import from_call, selector, with_slots
from ._jit_trace import Rediscover, Trace
from ._retrace import Record
from ._variable import Variable

_get_array = operator.attrgetter("_array")


class Entry:
    """Compiled code for one key: what it reads and assigns, and ``run``, the hot path.

    ``run`` is a closure with everything bound in advance. Its work before the
    dispatch is kept to a minimum: measured on a 2-core machine, each
    microsecond of Python before the dispatch costs 2-3 microseconds of step
    time, while work after it overlaps the step. An entry made with no trace
    (``trace=None``) only says that its key was traced once: its ``run``
    asks for a new trace, in which creating a variable is an error.
    """

    __slots__ = ("assigned", "assigned_of", "layout", "run", "guards", "owner", "key", "record")
    __slots__ += ("__weakref__",)

    def __init__(
        self,
        jitted: Any,
        key: Any,
        layout: Any,
        trace: Trace | None,
        assigned: list[Variable | int],
        may_fail: bool,
        leaves: Sequence[Any],
    ) -> None:
        # assigned: Variables the entry holds, or positions of Variable arguments
        # in the call's leaves (never held, see module doc).
        self.assigned, self.layout = assigned, layout
        self.owner = weakref.ref(jitted)
        self.key = key
        self.guards: list[weakref.ref] = []
        self.record: Record | None = None  # its signature, for retrace explanations
        assigned_of = self.assigned_of = from_call(assigned)
        if trace is None:

            def again(source: Sequence[Any]) -> Any:
                raise Rediscover(None)

            self.run = again
            return
        # The trace's inputs: one per supplied variable, in the trace's order; the
        # assigned ones (at these positions) are donated.
        supplied_of = trace.variables_of
        index = {id(v): i for i, v in enumerate(supplied_of(leaves))}
        positions = [index[id(v)] for v in assigned_of(leaves)]
        copying = jax.jit(trace.function, **jitted._jit_kwargs)
        donating = copying
        if jitted._donate:
            donating = jax.jit(
                trace.function, donate_argnums=tuple(positions), **jitted._jit_kwargs
            )
        pick_assigned = selector(positions)
        arguments = _arguments(layout)
        select = selector([i for i, ref in enumerate(layout[0]) if ref is None])
        # Without Variable arguments the lists are fixed: no call per step.
        fixed = all(isinstance(v, Variable) for v in trace.supplied)
        fixed_supplied = supplied_of(()) if fixed else []
        fixed_assigned = assigned_of(()) if fixed else []
        fixed_committed = _committed(fixed_assigned)
        refcount = sys.getrefcount
        token = object()  # identifies this entry's outputs in _trace.LAST
        latest, lock = _trace.LAST, _trace.STATE_LOCK
        name, returns_variables = jitted._name, trace.returns

        def run(source: Sequence[Any]) -> Any:
            if fixed:
                variables, targets = fixed_supplied, fixed_assigned
            else:
                variables, targets = supplied_of(source), assigned_of(source)
            args, kwargs = arguments(source)
            with lock:
                held = latest[0]
                latest[0] = None
                if held is not None and held[0] is token:
                    # Nothing touched a variable since our last call: these are the
                    # arrays it left, and no one else was handed them.
                    values, compiled = held[1], donating
                else:
                    values = list(map(_get_array, variables))
                    # References to each assigned buffer: the variable's slot, the
                    # list above, the tuple picked from it and getrefcount's
                    # argument. Any more means someone (a user's `old = v.value`,
                    # another variable) still holds it: then this call must not
                    # donate, or that array would be deleted under its holder.
                    shared = max(map(refcount, pick_assigned(values)), default=0) > 4
                    compiled = copying if shared or may_fail else donating
                del held
                try:
                    out, _, new_values = compiled(*values, *args, **kwargs)
                    if may_fail:  # surface a run-time failure before anything is assigned
                        jax.block_until_ready(new_values)
                except ValueError as e:
                    if "incompatible devices" not in str(e):
                        raise
                    raise device_error(name, variables, [], select(source)) from None
                # The next call's inputs. Replacing the donated arrays here, while
                # the step runs, releases them: measured, ~15 us/step cheaper than
                # afterwards.
                for i, value in zip(positions, new_values, strict=True):
                    values[i] = value
                for variable, value in zip(targets, new_values, strict=True):
                    variable._array = value
                moved = False
                for variable in fixed_committed if fixed else _committed(targets):
                    if variable._array.sharding != variable._sharding:
                        # XLA may choose another layout for an output than its
                        # input's (a replicated bias can come back sharded): put it
                        # back where the variable lives.
                        variable._array = jax.device_put(variable._array, variable._sharding)
                        moved = True
                latest[0] = None if moved or may_fail else (token, values)
            return _lift.restore_returned(out) if returns_variables[0] else out

        self.run = run

    def evict(self, why: str | None = None) -> None:
        """Drop this entry from its function's cache (its key's objects changed or died)."""
        jitted = self.owner()
        if jitted is not None and jitted._cache.get(self.key) is self:
            del jitted._cache[self.key]
            if self.record is not None and why is not None:
                self.record.evicted_by = why


def _committed(variables: list[Variable]) -> list[Variable]:
    return [v for v in variables if v._sharding is not None]


def _arguments(layout: Any) -> Callable[[Sequence[Any]], tuple[Sequence[Any], dict[str, Any]]]:
    """A function giving a call's arguments as the trace took them (objects as Slots)."""
    holders, _, treedef = layout
    if treedef is not None:
        return lambda source: with_slots(source, treedef)
    select, empty = selector([i for i, ref in enumerate(holders) if ref is None]), {}
    return lambda source: (select(source), empty)
