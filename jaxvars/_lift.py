"""The lifting path every jaxvars transform shares: snapshot, run pure, collect, apply.

A transform turns a function that reads and assigns variables into a pure
function of their values, which a JAX transform can take. First ``touched``
traces the function abstractly once to learn which variables it assigns
(``jv.jit`` passes ``jax.make_jaxpr`` as the tracer, which also shows it the
callbacks); ``pure_of`` then wraps steps 2 and 3:

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

import functools
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
from jax.extend.core import jaxpr_as_fun

from . import _initial, _trace
from ._errors import JaxvarsValueError
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
    (``frame.pending``, see ``touched``).
    """
    with (
        _trace.run_of(fn),
        _trace.frame(dict(zip(variables, values, strict=True)), records=records) as frame,
    ):
        frame.pending = [] if defer else None
        out = fn(*args, **(kwargs or {}))
    return out, frame


class Touched(NamedTuple):
    """What one abstract pass over a function found."""

    assigned: list[Variable]  # the variables it assigns, in order
    read: list[Variable]  # those it reads and does not assign
    used: list[Any]  # modules whose methods it ran, collections it read
    traced: Any  # what ``trace`` returned (a jaxpr, or the output's shapes)
    pending: list[Any]  # with ``defer``: creations left to ``settle`` (see _trace.Frame)


def touched(
    fn: Callable[..., Any],
    *args: Any,
    transform: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
    adapt: Callable[[Variable, Any], Any] | None = None,
    trace: Callable[..., Any] = jax.eval_shape,
    defer: bool = False,
) -> Touched:
    """Trace ``fn(*args)`` abstractly once to learn the variables it touches.

    The pass runs inside ``transform`` if given (e.g. the ``jax.vmap`` the
    function will run under, so that axis names resolve); ``adapt`` turns a
    variable's value into what one iteration or lane sees; ``trace(f, *args)``
    is the abstract evaluation (``jax.eval_shape``; ``jv.jit`` makes a jaxpr).
    Variables that ``fn`` makes (``get_variable``, a module that builds
    itself) are created here, concretely. Its assignments land in the pass's
    own frame and are dropped. With ``defer`` (a whole trace, ``trace`` making a
    jaxpr), variables it creates from values it computed are deferred, and the
    probe returns ``(result, their traced values, the assigned values)``: the
    pass can then run as the call itself (see ``settle``).
    """
    frames: list[_trace.Frame] = []

    # Wrapped, so that JAX's errors name fn (and its arguments), not this probe.
    @functools.wraps(fn)
    def probe(*call_args: Any, **call_kwargs: Any) -> Any:
        with _trace.run_of(fn), _trace.frame({}, records=True) as frame:
            frames.append(frame)
            frame.adapt = adapt
            frame.pending = [] if defer else None
            out = fn(*call_args, **call_kwargs)
        if frame.pending is None:
            return out
        deferred = [traced for *_, traced in frame.pending]
        return mark_returned(out), deferred, [frame.values[v] for v in frame.assigned]

    try:
        traced = trace(transform(probe) if transform else probe, *args)
    except BaseException:
        # Never a tracer left behind as a value or a mask.
        pending = (frames[-1].pending or []) if frames else []
        settle(pending, [None] * len(pending))
        raise
    frame = frames[-1]
    assigned = list(frame.assigned)
    read = [v for v in frame.discovered if v not in frame.assigned]
    return Touched(assigned, read, list(frame.used), traced, frame.pending or [])


def computed(
    traced: Any, inputs: Sequence[Any], last: int | None = None, **jit_kwargs: Any
) -> list[Any]:
    """The results of a traced computation (a closed jaxpr) on ``inputs``.

    Compiled, so with ``last`` (only the last results) XLA computes only what
    those need.
    """
    run = jaxpr_as_fun(traced)
    return jax.jit(lambda *xs: run(*xs)[-last:] if last else run(*xs), **jit_kwargs)(*inputs)


def run_as_call(found: Touched, inputs: Sequence[Any], jit_kwargs: dict[str, Any]) -> Any:
    """Run a pass ``touched(..., defer=True)`` made (``trace`` giving a jaxpr and
    the result's shapes) as the call itself: compute and give the deferred
    values, apply the assignments, return the result (placed by ``jax.jit``'s
    placement keywords, as the compiled step's would be)."""
    traced, shapes = found.traced
    placement = {k: v for k, v in jit_kwargs.items() if k in ("device", "backend")}
    results = computed(traced, inputs, **placement)
    jax.block_until_ready(results)  # a failure (a callback) changes nothing
    out, deferred, assigned = jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(shapes), results
    )
    with _trace.STATE_LOCK:
        settle(found.pending, deferred)
        apply(found.assigned, assigned)
    if "out_shardings" in jit_kwargs:
        out = jax.device_put(out, jit_kwargs["out_shardings"])
    return restore_returned(out)


def settle(pending: list[Any], values: Sequence[Any]) -> None:
    """Give the variables a trace created from values it computed those values."""
    for (variable, attribute, _), value in zip(pending, values, strict=True):
        _initial.settle(variable, attribute, value)


def pure_of(
    fn: Callable[..., Any], variables: Sequence[Variable], *, what: str, mark: bool = True
) -> Callable[..., Any]:
    """``fn`` as a pure function ``(values, *args) -> (result, new values)`` of ``variables``.

    ``variables`` must hold every variable ``fn`` assigns (from ``touched``);
    one it assigns only when traced again (Python control flow that changed
    in between) is an error naming it. With ``mark``, Variables in the result
    are marked (see module doc); loops, whose carry must keep its structure,
    pass ``mark=False``.
    """
    expected = dict.fromkeys(variables)  # identity membership

    def pure(values: Sequence[Any], *args: Any) -> Any:
        out, frame = run_pure(fn, variables, values, args, records=True)
        extra = [v.name for v in frame.assigned if v not in expected]
        if extra:
            raise JaxvarsValueError(
                f"{what}: assigned {extra} when traced but not on its first, probing run; "
                "make the variables it assigns independent of the values it is traced with."
            )
        return (mark_returned(out) if mark else out), collect(frame, variables)

    return pure


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
