"""The lifting path every jaxvars transform shares: snapshot, run pure, collect, apply.

A transform turns a function that reads and assigns variables into a pure
function of their values, which a JAX transform can take. Where the
transform needs them before JAX traces the function, ``touched`` traces it
abstractly once to learn which variables it assigns (``jv.jit``, ``jv.remat``
and ``jv.vmap`` learn it from the one trace instead); ``pure_of`` then wraps
steps 2 and 3:

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
    (``frame.pending``, see ``_trace.Frame``).
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


def touched(
    fn: Callable[..., Any],
    *args: Any,
    transform: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
    adapt: Callable[[Variable, Any], Any] | None = None,
) -> Touched:
    """Trace ``fn(*args)`` abstractly once (``jax.eval_shape``) to learn the variables
    it touches.

    The pass runs inside ``transform`` if given (e.g. the ``jax.vmap`` the
    function will run under, so that axis names resolve); ``adapt`` turns a
    variable's value into what one iteration or lane sees. Variables that
    ``fn`` makes (``get_variable``, a module that builds itself) are created
    here, concretely. Its assignments land in the pass's own frame and are
    dropped.
    """
    frames: list[_trace.Frame] = []

    # Wrapped, so that JAX's errors name fn (and its arguments), not this probe.
    @functools.wraps(fn)
    def probe(*call_args: Any, **call_kwargs: Any) -> Any:
        with _trace.run_of(fn), _trace.frame({}, records=True) as frame:
            frames.append(frame)
            frame.adapt = adapt
            return fn(*call_args, **call_kwargs)

    jax.eval_shape(transform(probe) if transform else probe, *args)
    frame = frames[-1]
    assigned = list(frame.assigned)
    read = [v for v in frame.discovered if v not in frame.assigned]
    return Touched(assigned, read, list(frame.used))


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
