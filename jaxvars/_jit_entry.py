"""One cache entry of a jv.jit function: compiled code for one key, and its hot path.

An entry holds the two ``jax.jit`` objects (donating and not) of one pure
function of (assigned values, read values, dynamic leaves). That function
calls the key's ``Trace`` (``_jit_trace``) with the variables in the order
it was traced with; JAX's trace cache answers that call, so compiling never
runs the user's Python again. Variables passed as arguments are not held by
the entry but taken from each call's leaves, so compiled code never keeps a
caller's variables or modules alive.

**Donation.** Assigned variables' old buffers are donated to the step,
unless someone else still holds one (a reference count above ours), in
which case that call copies. ``_trace.LAST`` remembers the outputs of the
latest call; while no variable has been touched since, the next call of the
same entry (its token) passes them straight back in, skipping the gather and
the count. Everything from the gather to the write-back holds
``_trace.STATE_LOCK``, as do eager reads and writes, so another thread can
never be handed a buffer that is being donated, and concurrent steps never
lose an update.
"""

from __future__ import annotations

import operator
import sys
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

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

    __slots__ = (
        "assigned",
        "read",
        "assigned_of",
        "layout",
        "run",
        "guards",
        "owner",
        "key",
        "record",
        "__weakref__",
    )

    def __init__(
        self,
        jitted: Any,
        key: Any,
        layout: Any,
        trace: Trace | None,
        assigned: list[Variable | int],
        read: list[Variable | int],
        may_fail: bool,
    ) -> None:
        # Each of assigned/read: Variables the entry holds, or positions of
        # Variable arguments in the call's leaves (never held, see module doc).
        self.assigned, self.read, self.layout = assigned, read, layout
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
        pure = _pure(trace, assigned, read, layout)
        donating = jax.jit(pure, donate_argnums=(0,), **jitted._jit_kwargs)
        copying = jax.jit(pure, **jitted._jit_kwargs)
        select = selector([i for i, ref in enumerate(layout[0]) if ref is None])
        read_of = from_call(read)
        # Without Variable arguments the lists are fixed: no call per step.
        fixed = all(isinstance(v, Variable) for v in (*assigned, *read))
        fixed_assigned, fixed_read = (assigned_of(()), read_of(())) if fixed else ([], [])
        fixed_committed = [v for v in fixed_assigned if v._sharding is not None]
        refcount = sys.getrefcount
        token = object()  # identifies this entry's outputs in _trace.LAST
        latest, lock = _trace.LAST, _trace.STATE_LOCK
        name, returns_variables = jitted._name, trace.returns

        def run(source: Sequence[Any]) -> Any:
            if fixed:
                variables, reads = fixed_assigned, fixed_read
            else:
                variables, reads = assigned_of(source), read_of(source)
            with lock:
                held = latest[0]
                latest[0] = None
                if held is not None and held[0] is token:
                    # Nothing touched a variable since our last call: these are the
                    # arrays we wrote, and no one else was handed them.
                    values, compiled = held[1], donating
                else:
                    values = list(map(_get_array, variables))
                    # References to each buffer: the variable's slot, the list above
                    # and getrefcount's argument. Any more means someone (a user's
                    # `old = v.value`, another variable) still holds it: then this
                    # call must not donate, or that array would be deleted under
                    # its holder.
                    shared = max(map(refcount, values), default=0) > 3
                    compiled = copying if shared or may_fail else donating
                del held
                try:
                    out, new_values = compiled(
                        values, list(map(_get_array, reads)) if reads else [], select(source)
                    )
                    if may_fail:  # surface a run-time failure before anything is assigned
                        jax.block_until_ready(new_values)
                except ValueError as e:
                    if "incompatible devices" not in str(e):
                        raise
                    raise device_error(name, variables, reads, select(source)) from None
                # Drop the donated arrays before rebinding: measured, releasing them
                # while the step runs is ~15 us/step cheaper than afterwards.
                del values
                for variable, value in zip(variables, new_values, strict=True):
                    variable._array = value
                moved = False
                committed = fixed_committed if fixed else _committed(variables)
                for variable in committed:
                    if variable._array.sharding != variable._sharding:
                        # XLA may choose another layout for an output than its
                        # input's (a replicated bias can come back sharded): put it
                        # back where the variable lives.
                        variable._array = jax.device_put(variable._array, variable._sharding)
                        moved = True
                latest[0] = None if moved or may_fail else (token, new_values)
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


def _pure(
    trace: Trace, assigned: list[Variable | int], read: list[Variable | int], layout: Any
) -> Callable[..., Any]:
    """The pure function of (assigned values, read values, dynamic leaves) that calls ``trace``.

    A supplied variable the trace never touched gets zeros of its shape: an
    input the compiled code does not use (XLA drops it).
    """
    holders, _, treedef = layout
    assigned_of, read_of, supplied_of = from_call(assigned), from_call(read), trace.variables_of
    traced = trace.jitted

    def pure(assigned_values: list[Any], read_values: list[Any], dynamic: list[Any]) -> Any:
        rest = iter(dynamic)
        leaves = [next(rest) if ref is None else ref() for ref in holders]
        given = dict(
            zip(
                [*assigned_of(leaves), *read_of(leaves)],
                [*assigned_values, *read_values],
                strict=True,
            )
        )
        values = [
            given[v] if v in given else jnp.zeros(v.shape, v.dtype) for v in supplied_of(leaves)
        ]
        args, kwargs = with_slots(leaves, treedef)
        out, _, new_values = traced(values, *args, **kwargs)
        return out, new_values

    return pure
