"""Lifted JAX transforms: cond, switch, while_loop, scan, vmap and remat with variables.

Each is the JAX transform of the same name applied to the function's pure
form (``_lift``), traced once: the variables the function will probably
touch (``_lift.Lifting``) enter as arguments (or as a loop carry, or as
scanned slices), their values at the function's end leave as results (JAX
turns those it did not change into constants), and what it assigned is
applied afterwards, to the enclosing transform's frame or, eagerly, to the
variables. Other variables it only reads are read through the frame like
closures; JAX captures them as it captures any closed-over array.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar, cast

import jax
import jax.numpy as jnp
from jax.core import Tracer

from . import _lift, _random, _trace
from ._errors import JaxvarsTypeError, JaxvarsValueError, boundary
from ._explain import with_path
from ._jit_key import is_object
from ._module import Module
from ._operators import unwrap
from ._scanned import per_step, split_state
from ._variable import Variable

_current_frame = _trace.current.get

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
Carry = TypeVar("Carry")
X = TypeVar("X")
Y = TypeVar("Y")


def eager() -> bool:
    return _current_frame() is None


def locked(fn: Callable[P, R]) -> Callable[P, R]:
    """Run eager calls as one atomic update (the state lock), as a jv.jit step is,
    behind a traceback boundary."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        if not eager():
            with _trace.lifted_call():
                return fn(*args, **kwargs)
        with _trace.STATE_LOCK, _trace.lifted_call():
            return fn(*args, **kwargs)

    return boundary(call)  # users' tracebacks end in their own code


# -- cond, switch ----------------------------------------------------------------------------


@locked
def cond(pred: Any, true_fn: Callable[..., R], false_fn: Callable[..., R], *operands: Any) -> R:
    """``jax.lax.cond`` whose branches may read and assign variables.

    The taken branch's assignments take effect; a variable assigned only in
    the other branch keeps its value. Eagerly, with a concrete predicate, only
    the taken branch runs (as plain Python), and its assignments apply only if
    it returns. Inside ``jv.jit`` the predicate may be traced; it may be a
    Variable.

    Returns:
        What the taken branch returns, typed as the branches are. Traced, the
        result is computed, as ``jax.lax.cond``'s is: its leaves are arrays, and
        a Variable a branch returns comes back as its value.

    Example:
        >>> import jaxvars as jv
        >>> count = jv.Variable(0, name="count")
        >>> step = jv.jit(lambda x: jv.cond(x > 0, lambda: count.assign_add(1) * 0,
        ...                                 lambda: count * 0))
        >>> _ = step(1.0); _ = step(-1.0); _ = step(2.0)
        >>> int(count)
        2
    """
    pred = unwrap(pred)  # a Variable flag: its value (traced inside jv.jit)
    # True first: JAX traces the branches in order, and TF builds true_fn first,
    # so it names its layers first (dense, then dense_1).
    if _traced(pred):
        return _switch(None, [true_fn, false_fn], operands, pred=pred)
    return _switch(1 - int(bool(pred)), [true_fn, false_fn], operands)


@locked
def switch(index: Any, branches: Sequence[Callable[..., R]], *operands: Any) -> R:
    """``jax.lax.switch`` whose branches may read and assign variables.

    Only the chosen branch's assignments take effect. Eagerly, with a concrete
    index, only that branch runs, and if it raises nothing changes. The index
    (a Variable too) is clamped to the branches, as in ``jax.lax.switch``.

    Returns:
        What the chosen branch returns, typed and (traced) computed as for
        ``jv.cond``.

    Example:
        >>> import jaxvars as jv
        >>> v = jv.Variable(0.0, name="v")
        >>> branches = [lambda: v.assign(1.0) * 0, lambda: v.assign(2.0) * 0]
        >>> _ = jv.jit(lambda i: jv.switch(i, branches))(1)
        >>> float(v)
        2.0
    """
    return _switch(index, list(branches), operands)


def _switch(index: Any, branches: list[Any], operands: Any, pred: Any = None) -> Any:
    """``jax.lax.switch`` on ``index`` over the lifted branches, or ``jax.lax.cond`` on a
    traced ``pred`` (two branches): XLA then passes a variable one branch does not
    assign through uncopied, which it copies out of an indexed conditional."""
    if not branches:
        raise JaxvarsValueError("jv.switch needs at least one branch.")
    index = unwrap(index)
    if pred is None and eager() and not _traced(index):
        chosen = min(max(int(index), 0), len(branches) - 1)
        # In a frame of its own: its assignments apply only if it returns.
        out, frame = _lift.run_pure(branches[chosen], [], [], operands, records=True)
        assigned = list(frame.assigned)
        _lift.apply(assigned, _lift.collect(frame, assigned))
        return out
    lifting = _lift.Lifting("jv.switch branch", branches, operands)
    # Traced, a Variable a branch returns comes back as its value (as tf.cond
    # gives tensors): the branches' results must have one structure.
    branches = [_returning_values(branch) for branch in branches]

    def attempt(variables: list[Variable]) -> Any:
        pures = [lifting.pure(branch, variables) for branch in branches]
        if pred is not None:
            return jax.lax.cond(pred, *pures, lifting.inputs(variables), *operands)
        return jax.lax.switch(index, pures, lifting.inputs(variables), *operands)

    variables, (out, ends) = lifting.attempts(attempt)
    lifting.finish(dict(zip(variables, ends, strict=True)))
    return _lift.restore_returned(out)


def _returning_values(branch: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(branch)
    def values(*operands: Any) -> Any:
        out = branch(*operands)
        return jax.tree_util.tree_map(unwrap, out, is_leaf=lambda x: isinstance(x, Variable))

    return values


def _traced(x: Any) -> bool:
    return isinstance(x, Tracer)


# -- while_loop ----------------------------------------------------------------------------


@locked
def while_loop(cond_fun: Callable[[T], Any], body_fun: Callable[[T], T], init_val: T) -> T:
    """``jax.lax.while_loop`` whose ``body_fun`` may assign variables.

    ``cond_fun`` may read variables (it sees their values as carried by the
    loop) but must not assign them: that is an error naming the variable.

    Returns:
        The final carry, of ``init_val``'s type (as ``jax.lax.while_loop``
        types it; its leaves are arrays).

    Example:
        >>> import jaxvars as jv
        >>> total = jv.Variable(0, name="total")
        >>> def body(i):
        ...     total.assign_add(i)
        ...     return i + 1
        >>> int(jv.while_loop(lambda i: total < 10, body, 0)), int(total)
        (5, 10)
    """
    lifting = _lift.Lifting("jv.while_loop body", [cond_fun, body_fun], [init_val])

    def attempt(variables: list[Variable]) -> Any:
        body = lifting.pure(body_fun, variables, mark=False)

        def pure_cond(carry: Any) -> Any:
            value, values = carry
            out, frame = lifting.run(cond_fun, variables, values, (value,))
            if frame.assigned:
                raise _assigned_in_cond(list(frame.assigned))
            return out

        def pure_body(carry: Any) -> Any:
            value, values = carry
            return body(values, value)

        return jax.lax.while_loop(pure_cond, pure_body, (init_val, lifting.inputs(variables)))

    variables, (value, ends) = lifting.attempts(attempt)
    lifting.finish(dict(zip(variables, ends, strict=True)))
    return value


def _assigned_in_cond(assigned: list[Variable]) -> Exception:
    names = ", ".join(f"'{v.name}'" for v in assigned)
    return with_path(
        assigned[0],
        JaxvarsValueError(
            f"jv.while_loop: cond_fun assigns variable(s) {names}; it may only read them. "
            "Move the assignment into body_fun."
        ),
    )


# -- scan --------------------------------------------------------------------------------------


@locked
def scan(
    f: Callable[[Carry, X], tuple[Carry, Y]],
    init: Carry,
    xs: X | None = None,
    length: int | None = None,
    *,
    reverse: bool = False,
    unroll: int | bool = 1,
    variable_axes: Any = None,
) -> tuple[Carry, Y]:
    """``jax.lax.scan`` whose ``f(carry, x) -> (carry, y)`` may read and assign variables.

    Variables ``f`` assigns are carried from one iteration to the next.
    ``variable_axes`` makes variables per-iteration: a mapping whose keys are
    Variables, Modules (all their variables) or strings (a regular expression
    searched in a variable's full name), and whose values are an axis.
    Iteration ``i`` sees slice ``i`` along that axis and its assignments write
    slice ``i``: scan over layers, one layer's code for stacked weights. A
    Module or Variable among ``xs`` (a stacked Module, as ``jv.vmap`` over a
    constructor makes) is scanned along axis 0 the same way: each step's ``x``
    holds it, its variables seen as that step's slices (NNX's
    ``nnx.scan(f, in_axes=(nnx.Carry, 0))(x, self.blocks)``).

    Returns:
        ``(carry, ys)`` as ``jax.lax.scan`` returns and types them: the final
        carry and the per-iteration outputs stacked on a leading axis.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxvars as jv
        >>> w = jv.Variable(jnp.array([1.0, 2.0, 3.0]), name="layers/w")  # 3 "layers"
        >>> def layer(h, _):
        ...     return h * w, None
        >>> float(jv.scan(layer, 1.0, length=3, variable_axes={"layers/": 0})[0])
        6.0
    """
    per_iteration = axes_of(variable_axes, "jv.scan")
    given, (xs, held, step_x) = xs, split_state(xs)
    body_fn = f if step_x is None else lambda carry, x: f(carry, step_x(x))
    per_iteration = per_step(per_iteration, held, axis_of) if held else per_iteration
    size = _length(length, xs)
    if size is None and held and held[0].shape:  # only objects: their leading axis
        size = held[0].shape[0]  # (check_splits names a variable without one)
    lifting = _lift.Lifting(
        "jv.scan body",
        [f],
        [init, given],
        split=lambda v: axis_of(per_iteration, v) is not None,
        # A variable it cannot split is no guess (one it reads is missed, then refused).
        fits=lambda v, value: (
            axis_of(per_iteration, v) is None or splits(v, jnp.shape(value), per_iteration, size)
        ),
    )

    def attempt(variables: list[Variable]) -> Any:
        # Shared variables are carried (those only read, JAX makes constants);
        # stacked ones enter as scanned slices, and their slices leave as outputs.
        shared = [v for v in variables if axis_of(per_iteration, v) is None]
        stacked = [v for v in variables if axis_of(per_iteration, v) is not None]
        axes = [cast(int, axis_of(per_iteration, v)) for v in stacked]
        check_splits("jv.scan", stacked, lifting.inputs(stacked), axes, size)
        body = lifting.pure(body_fn, [*shared, *stacked], mark=False)
        n = len(shared)

        def step(carry: Any, sliced: Any) -> Any:
            value, shared_values = carry
            x, slices = sliced
            (value, y), ends = body([*shared_values, *slices], value, x)
            return (value, ends[:n]), (y, ends[n:])

        stacks = [
            jnp.moveaxis(value, axis, 0)
            for value, axis in zip(lifting.inputs(stacked), axes, strict=True)
        ]
        (value, shared_ends), (ys, stacked_ends) = jax.lax.scan(
            step,
            (init, lifting.inputs(shared)),
            (xs, stacks),
            length=length,
            reverse=reverse,
            unroll=unroll,
        )
        assigned = dict.fromkeys(lifting.assigned())
        ends = dict(zip(shared, shared_ends, strict=True))
        for variable, axis, new in zip(stacked, axes, stacked_ends, strict=True):
            if variable in assigned:  # JAX passes the others through uncopied
                ends[variable] = jnp.moveaxis(new, 0, axis)
        return ends, value, ys

    _, (ends, value, ys) = lifting.attempts(attempt)
    lifting.finish(ends)
    return value, ys


def _length(length: int | None, xs: Any) -> int | None:
    """The number of iterations, if ``length`` or ``xs`` tell it."""
    leaves = jax.tree_util.tree_leaves(xs)
    if length is None and leaves:
        length = int(jnp.shape(leaves[0])[0])
    return length


def check_splits(
    what: str, split: list[Variable], values: list[Any], axes: list[int], size: int | None
) -> None:
    """Each split variable must have its axis, with one slice per iteration (lane), in
    the value it enters with (inside an enclosing split, a slice of the variable)."""
    one = "lane" if what == "jv.vmap" else "iteration"
    for variable, value, axis in zip(split, values, axes, strict=True):
        shape = jnp.shape(value)
        ndim = len(shape)
        if not -ndim <= axis < ndim:
            problem = (
                f"along axis {axis}, which it does not have. Give an axis below {ndim}, "
                "or leave the variable out of variable_axes to share it."
            )
        elif size not in (None, shape[axis]):
            problem = (
                f"along axis {axis} (variable_axes), so it needs {size} slices there, one "
                f"per {one}; it has {shape[axis]}. Stack one slice per {one}, "
                f"or leave it out of variable_axes to share it across {one}s."
            )
        else:
            size = shape[axis]
            continue
        seen = "" if shape == variable.shape else f" (seen here as {shape})"
        raise with_path(
            variable,
            JaxvarsValueError(
                f"{what}: variable '{variable.name}' of shape {variable.shape}{seen} is split "
                f"{problem}"
            ),
        )


# -- variable axes: Variables, Modules or name patterns ------------------------------------------


def axes_of(variable_axes: Any, what: str) -> Any:
    """``variable_axes`` normalised: None, an int for every variable, or a list of rules."""
    if variable_axes is None or isinstance(variable_axes, int):
        return variable_axes
    if not isinstance(variable_axes, Mapping):
        raise JaxvarsTypeError(
            f"{what}: variable_axes must be None, an int, or a mapping from Variables, "
            f"Modules or name patterns to axes; got {type(variable_axes).__name__}."
        )
    rules: list[tuple[Any, int]] = []
    for key, axis in variable_axes.items():
        if not isinstance(axis, int):
            raise JaxvarsTypeError(f"{what}: the axis for {key!r} must be an int, got {axis!r}.")
        if isinstance(key, Variable):
            rules.append((key, axis))
        elif isinstance(key, Module):
            rules.extend((v, axis) for v in key.variables)
        elif isinstance(key, str):
            rules.append((re.compile(key), axis))
        else:
            raise JaxvarsTypeError(
                f"{what}: variable_axes keys are Variables, Modules or name patterns; "
                f"got {type(key).__name__}."
            )
    return rules


def splits(variable: Variable, shape: tuple[int, ...], axes: Any, size: int | None) -> bool:
    """Whether ``variable_axes`` splits ``variable``, seen with ``shape``, into ``size``
    slices (any number if None): a guess of the variables a scan or vmap splits holds
    only those it can."""
    axis = axis_of(axes, variable)
    if axis is None or not -len(shape) <= axis < len(shape):
        return False
    return size is None or shape[axis] == size


def axis_of(axes: Any, variable: Variable) -> int | None:
    if axes is None:
        return None
    if isinstance(axes, int):  # every variable but jaxvars' random stream, always shared
        return None if _random.is_stream(variable) else axes
    for key, axis in axes:
        if key is variable or (isinstance(key, re.Pattern) and key.search(variable.name)):
            return axis
    return None


# -- remat -----------------------------------------------------------------------------------------


def remat(
    fn: Callable[P, R], *, policy: Any = None, static_argnums: int | Sequence[int] = ()
) -> Callable[P, R]:
    """``jax.checkpoint`` whose ``fn`` may read and assign variables.

    Values and gradients equal those without it; activations are recomputed
    in the backward pass instead of stored. Assignments inside happen once
    per call, never again during the recomputation. Keyword arguments are
    traced, as ``jax.checkpoint``'s are.

    Returns:
        A function with ``fn``'s signature and result type (Variables it
        returns come back as themselves).

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxvars as jv
        >>> w = jv.Variable(3.0, name="w")
        >>> calls = jv.Variable(0, name="calls")
        >>> def layer(x):
        ...     calls.assign_add(1)
        ...     return jnp.sin(x * w)
        >>> g = jv.grad(lambda: jv.remat(layer)(1.0), w)()
        >>> round(float(g), 4), int(calls)
        (-0.99, 1)
    """
    statics = {static_argnums} if isinstance(static_argnums, int) else set(static_argnums)
    call: Callable[..., Any] = fn  # called with rebuilt arguments, not P's

    @functools.wraps(fn)
    @locked
    def rematerialised(*args: P.args, **kwargs: P.kwargs) -> R:
        n = len(args)  # negative static_argnums count from the end, as jax.checkpoint's do
        fixed = {i: a for i, a in enumerate(args) if i in statics or i - n in statics}
        # Keyword arguments travel as one more (pytree) argument, as jax.checkpoint's do.
        dynamic = [*(a for i, a in enumerate(args) if i not in fixed), kwargs]

        def bound(*dyn: Any) -> Any:
            *positional, keywords = dyn
            rest = iter(positional)
            return call(
                *[fixed[i] if i in fixed else next(rest) for i in range(len(args))], **keywords
            )

        # One trace: jax.checkpoint needs the outputs' structure only once the
        # function has run, so the values of what it assigned, in the order it
        # assigned them, are outputs, and a variable it reads comes in from the
        # enclosing frame (closed over, as a checkpointed function's constants do).
        assigned: list[Variable] = []

        def pure(*dyn: Any) -> Any:
            out, frame = _lift.run_pure(bound, [], [], dyn, records=True)
            assigned.extend(frame.assigned)
            return _lift.mark_returned(out), _lift.collect(frame, assigned)

        out, new_values = jax.checkpoint(pure, policy=policy)(*dynamic)
        # Eagerly, a constant assigned comes back as a NumPy-backed array: make it JAX's.
        _lift.apply(assigned, [jnp.asarray(value) for value in new_values])
        return _lift.restore_returned(out)

    return rematerialised


# -- eval_shape --------------------------------------------------------------------------------


@boundary
def eval_shape(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` without computing or allocating anything, as ``jax.eval_shape`` does.

    Variables created inside are abstract: they have ``.name``, ``.shape``,
    ``.dtype``, ``.sharding`` (under ``jv.sharding_rules``) and ``.trainable``
    but no value (``v.is_abstract``). Inside ``fn`` everything is abstract, so
    reading one gives its shape and dtype; afterwards reading or computing with
    one raises an error naming it, and assigning it (``jv.restore`` does) gives
    it a value. A ``trainable`` mask computed inside is computed for real (only
    the masks; abstract arguments count as zeros there).
    Modules, ``get_variable``, Optimizers and sharding rules all work. Existing
    variables are not changed. Arrays in the result come back as
    ``jax.ShapeDtypeStruct``; Variables and Modules as themselves.

    Args:
        fn: The function to run abstractly.
        *args: Its arguments: arrays, or ``jax.ShapeDtypeStruct`` standing in
            for them (so they are typed ``Any``).
        **kwargs: Its keyword arguments, likewise.

    Returns:
        What ``fn`` returns, typed as ``fn``'s result, so
        ``jv.eval_shape(lambda: Model(...))`` is a ``Model``; its leaves are
        abstract: Variables without a value, arrays as ``jax.ShapeDtypeStruct``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxvars as jv
        >>> big = jv.eval_shape(lambda: jv.Variable(jnp.zeros((2**16, 2**15)), name="big"))
        >>> big.shape, big.is_abstract
        ((65536, 32768), True)
    """
    kept: list[Any] = []

    def run(*call_args: Any, **call_kwargs: Any) -> Any:
        # Assignments (a random draw, say) land in this frame and are dropped;
        # trainable masks it computes are deferred (computed after, see below).
        out, frame = _lift.run_pure(fn, [], [], call_args, call_kwargs, records=True, defer=True)
        leaves, treedef = jax.tree_util.tree_flatten(out, is_leaf=is_object)
        kept.append((leaves, treedef, frame.pending))
        arrays = [x for x in leaves if not is_object(x) and isinstance(x, jax.Array)]
        return arrays, [traced for *_, traced in frame.pending or ()]

    token = _trace.abstract.set(True)
    try:
        traced, (shapes, _) = jax.make_jaxpr(run, return_shape=True)(*args, **kwargs)
    finally:
        _trace.abstract.reset(token)
    leaves, treedef, pending = kept[-1]
    if pending:
        # Masks are small and needed to train the restored model: compute them
        # (and only them). Abstract arguments stand in as zeros.
        inputs = [
            jnp.zeros(x.shape, x.dtype) if isinstance(x, jax.ShapeDtypeStruct) else x
            for x in jax.tree_util.tree_leaves((args, kwargs))
        ]
        _lift.settle(pending, _lift.computed(traced, inputs, last=len(pending)))
    arrays = iter(shapes)
    leaves = [next(arrays) if not is_object(x) and isinstance(x, jax.Array) else x for x in leaves]
    return jax.tree_util.tree_unflatten(treedef, leaves)
