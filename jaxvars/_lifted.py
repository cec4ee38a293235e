"""Lifted JAX transforms: cond, switch, while_loop, scan, vmap and remat with variables.

Each is the JAX transform of the same name applied to the function's pure
form (``_lift``): the variables the function assigns are found by tracing it
once abstractly (``_lift.touched``), their values enter as arguments (or as a
loop carry, or as scanned slices), their new values leave as results, and
they are assigned afterwards, to the enclosing transform's frame or, eagerly,
to the variables. Variables a function only reads are read through the frame
like closures; JAX captures them as it captures any closed-over array.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
from jax.core import Tracer

from . import _lift, _random, _trace
from ._errors import JaxvarsTypeError, JaxvarsValueError
from ._module import Module
from ._variable import Variable

_current_frame = _trace.current.get
_fresh = itertools.count()


def _eager() -> bool:
    return _current_frame() is None


def _locked(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run eager calls as one atomic update (the state lock), as a jv.jit step is."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if not _eager():
            return fn(*args, **kwargs)
        with _trace.STATE_LOCK:
            return fn(*args, **kwargs)

    return call


# -- cond, switch ----------------------------------------------------------------------------


@_locked
def cond(pred: Any, true_fn: Callable[..., Any], false_fn: Callable[..., Any], *operands: Any):
    """``jax.lax.cond`` whose branches may read and assign variables.

    The taken branch's assignments take effect; a variable assigned only in
    the other branch keeps its value. Eagerly, with a concrete predicate, only
    the taken branch runs (as plain Python). Inside ``jv.jit`` the predicate
    may be traced.

    Example:
        >>> import jaxvars as jv
        >>> count = jv.Variable(0, name="count")
        >>> step = jv.jit(lambda x: jv.cond(x > 0, lambda: count.assign_add(1) * 0,
        ...                                 lambda: count * 0))
        >>> _ = step(1.0); _ = step(-1.0); _ = step(2.0)
        >>> int(count)
        2
    """
    index = jnp.where(pred, 1, 0) if _traced(pred) else int(bool(pred))
    return switch(index, [false_fn, true_fn], *operands)


@_locked
def switch(index: Any, branches: Sequence[Callable[..., Any]], *operands: Any) -> Any:
    """``jax.lax.switch`` whose branches may read and assign variables.

    Only the chosen branch's assignments take effect. Eagerly, with a concrete
    index, only that branch runs. The index is clamped to the branches, as in
    ``jax.lax.switch``.

    Example:
        >>> import jaxvars as jv
        >>> v = jv.Variable(0.0, name="v")
        >>> branches = [lambda: v.assign(1.0) * 0, lambda: v.assign(2.0) * 0]
        >>> _ = jv.jit(lambda i: jv.switch(i, branches))(1)
        >>> float(v)
        2.0
    """
    branches = list(branches)
    if not branches:
        raise JaxvarsValueError("jv.switch needs at least one branch.")
    if _eager() and not _traced(index):
        chosen = min(max(int(index), 0), len(branches) - 1)
        return branches[chosen](*operands)
    assigned = _union(_lift.touched(branch, *operands)[0] for branch in branches)
    pures = [_lift.pure_of(branch, assigned, what="jv.switch branch") for branch in branches]
    out, new_values = jax.lax.switch(index, pures, _lift.snapshot(assigned), *operands)
    _lift.apply(assigned, new_values)
    return _lift.restore_returned(out)


def _traced(x: Any) -> bool:
    return isinstance(x, Tracer)


def _union(groups: Any) -> list[Variable]:
    merged: dict[Variable, None] = {}  # an ordered set by identity
    for group in groups:
        merged.update(dict.fromkeys(group))
    return list(merged)


# -- while_loop ----------------------------------------------------------------------------


@_locked
def while_loop(cond_fun: Callable[[Any], Any], body_fun: Callable[[Any], Any], init_val: Any):
    """``jax.lax.while_loop`` whose ``body_fun`` may assign variables.

    ``cond_fun`` may read variables (it sees their values as carried by the
    loop) but must not assign them: that is an error naming the variable.

    Example:
        >>> import jaxvars as jv
        >>> total = jv.Variable(0, name="total")
        >>> def body(i):
        ...     total.assign_add(i)
        ...     return i + 1
        >>> int(jv.while_loop(lambda i: total < 10, body, 0)), int(total)
        (5, 10)
    """
    assigned_in_cond = _lift.touched(cond_fun, init_val)[0]
    if assigned_in_cond:
        names = ", ".join(f"'{v.name}'" for v in assigned_in_cond)
        raise JaxvarsValueError(
            f"jv.while_loop: cond_fun assigns variable(s) {names}; it may only read them. "
            "Move the assignment into body_fun."
        )
    assigned = _lift.touched(body_fun, init_val)[0]
    body = _lift.pure_of(body_fun, assigned, what="jv.while_loop body", mark=False)

    def pure_cond(carry: Any) -> Any:
        value, values = carry
        out, _ = _lift.run_pure(cond_fun, assigned, values, (value,), records=True)
        return out

    def pure_body(carry: Any) -> Any:
        value, values = carry
        return body(values, value)

    value, values = jax.lax.while_loop(pure_cond, pure_body, (init_val, _lift.snapshot(assigned)))
    _lift.apply(assigned, values)
    return value


# -- scan --------------------------------------------------------------------------------------


@_locked
def scan(
    f: Callable[[Any, Any], Any],
    init: Any,
    xs: Any = None,
    length: int | None = None,
    *,
    reverse: bool = False,
    unroll: int | bool = 1,
    variable_axes: Any = None,
) -> Any:
    """``jax.lax.scan`` whose ``f(carry, x) -> (carry, y)`` may read and assign variables.

    Variables ``f`` assigns are carried from one iteration to the next.
    ``variable_axes`` makes variables per-iteration: a mapping whose keys are
    Variables, Modules (all their variables) or strings (a regular expression
    searched in a variable's full name), and whose values are an axis.
    Iteration ``i`` sees slice ``i`` along that axis and its assignments write
    slice ``i``: scan over layers, one layer's code for stacked weights.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxvars as jv
        >>> w = jv.Variable(jnp.array([1.0, 2.0, 3.0]), name="layers/w")  # 3 "layers"
        >>> def layer(h, _):
        ...     return h * w, None
        >>> float(jv.scan(layer, 1.0, length=3, variable_axes={"layers/": 0})[0])
        6.0
    """
    per_iteration = _axes_of(variable_axes, "jv.scan")

    def run_scan(body: Callable[..., Any], carry: Any, sliced: Any) -> Any:
        return jax.lax.scan(body, carry, sliced, length=length, reverse=reverse, unroll=unroll)

    assigned, read = _lift.touched(
        f,
        init,
        xs,
        transform=lambda probe: functools.partial(run_scan, probe),
        adapt=functools.partial(_one_slice, per_iteration),
    )
    stacked = [v for v in _union([assigned, read]) if _axis(per_iteration, v) is not None]
    carried = [v for v in assigned if _axis(per_iteration, v) is None]
    axes = [cast(int, _axis(per_iteration, v)) for v in stacked]
    body = _lift.pure_of(f, [*carried, *stacked], what="jv.scan body", mark=False)
    n = len(carried)

    def step(carry: Any, sliced: Any) -> Any:
        value, carried_values = carry
        x, slices = sliced
        (value, y), new_values = body([*carried_values, *slices], value, x)
        return (value, new_values[:n]), (y, new_values[n:])

    stacks = [jnp.moveaxis(v._value, axis, 0) for v, axis in zip(stacked, axes, strict=True)]
    (value, carried_values), (ys, new_stacks) = run_scan(
        step, (init, _lift.snapshot(carried)), (xs, stacks)
    )
    _lift.apply(carried, carried_values)
    written = dict.fromkeys(assigned)  # per-iteration variables that were only read stay
    _lift.apply(
        [v for v in stacked if v in written],
        [
            jnp.moveaxis(new, 0, axis)
            for v, new, axis in zip(stacked, new_stacks, axes, strict=True)
            if v in written
        ],
    )
    return value, ys


def _one_slice(axes: Any, variable: Variable, value: Any) -> Any:
    """What one iteration (or lane) sees of ``variable``: a slice if it is split."""
    axis = _axis(axes, variable)
    return value if axis is None else jnp.take(value, 0, axis=axis)


# -- variable axes: Variables, Modules or name patterns ------------------------------------------


def _axes_of(variable_axes: Any, what: str) -> Any:
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


def _axis(axes: Any, variable: Variable) -> int | None:
    if axes is None:
        return None
    if isinstance(axes, int):  # every variable but jaxvars' random stream, always shared
        return None if _random.is_stream(variable) else axes
    for key, axis in axes:
        if key is variable or (isinstance(key, re.Pattern) and key.search(variable.name)):
            return axis
    return None


# -- vmap ------------------------------------------------------------------------------------------


PER_LANE_ASSIGNMENT = (
    "jv.vmap: variable '{name}' is broadcast (each lane reads the same value), but "
    "the value assigned to it differs per lane. Split it over the mapped axis with "
    "variable_axes={{...: axis}}, or assign a value that does not depend on the lane, "
    "e.g. a reduction over axis_name: jax.lax.pmean(x, axis_name)."
)


def vmap(
    fn: Callable[..., Any],
    in_axes: Any = 0,
    out_axes: Any = 0,
    *,
    axis_size: int | None = None,
    axis_name: Any = None,
    variable_axes: Any = None,
) -> Callable[..., Any]:
    """``jax.vmap`` whose ``fn`` may read and assign variables.

    Variables not in ``variable_axes`` are broadcast: every lane reads the
    same value, and may assign it a value that does not depend on the lane
    (a reduction over ``axis_name``, say); a value that differs per lane is
    an error naming the variable. Variables in ``variable_axes`` (as for
    ``jv.scan``, or an int meaning every variable) are split: lane ``i``
    reads and assigns slice ``i``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import jaxvars as jv
        >>> mean = jv.Variable(0.0, name="mean")
        >>> def f(x):
        ...     mean.assign(jax.lax.pmean(x, "batch"))
        ...     return x - mean
        >>> jv.vmap(f, axis_name="batch")(jnp.array([1.0, 3.0])).tolist(), float(mean)
        ([-1.0, 1.0], 2.0)
    """
    axes = _axes_of(variable_axes, "jv.vmap")

    # An axis name even when none is given: random draws fold in the lane index.
    name = axis_name if axis_name is not None else f"jaxvars_vmap_{next(_fresh)}"

    def in_lane(*lane_args: Any) -> Any:
        token = _trace.lanes.set((*_trace.lanes.get(), name))
        try:
            return fn(*lane_args)
        finally:
            _trace.lanes.reset(token)

    @functools.wraps(fn)
    @_locked
    def mapped(*args: Any) -> Any:
        in_axes_all = _as_tuple(in_axes, len(args))

        def run_vmap(f: Callable[..., Any], outs: Any) -> Callable[..., Any]:
            return jax.vmap(
                f, in_axes=in_axes_all, out_axes=outs, axis_size=axis_size, axis_name=name
            )

        if _eager() and not args and axis_size is not None and _builds(axes):
            return _ensemble(fn, axes, axis_size, out_axes)
        assigned, read = _lift.touched(
            in_lane,
            *args,
            transform=lambda probe: run_vmap(probe, out_axes),
            adapt=functools.partial(_one_slice, axes),
        )
        split = [v for v in _union([assigned, read]) if _axis(axes, v) is not None]
        broadcast = [v for v in assigned if _axis(axes, v) is None]
        split_axes = [_axis(axes, v) for v in split]
        body = _lift.pure_of(in_lane, [*split, *broadcast], what="jv.vmap")
        n = len(split)

        def pure(split_values: list[Any], *call_args: Any) -> Any:
            # Broadcast variables enter through the enclosing frame, unmapped.
            out, new_values = body([*split_values, *_lift.snapshot(broadcast)], *call_args)
            return out, new_values[:n], new_values[n:]

        def batched(broadcast_axes: list[Any]) -> Callable[..., Any]:
            outs = (out_axes, split_axes, broadcast_axes)
            return jax.vmap(
                lambda split_values, *a: pure(split_values, *a),
                in_axes=(split_axes, *in_axes_all),
                out_axes=outs,
                axis_size=axis_size,
                axis_name=name,
            )

        try:
            out, new_split, new_broadcast = batched([None] * len(broadcast))(
                _lift.snapshot(split), *args
            )
        except ValueError as e:
            message = str(e)
            if "out_axes is None" not in message and "axis spec None" not in message:
                raise
            # Which broadcast variable got a per-lane value: try each alone.
            for i, variable in enumerate(broadcast):
                only = [None if j == i else 0 for j in range(len(broadcast))]
                try:
                    jax.eval_shape(batched(only), _lift.snapshot(split), *args)
                except ValueError:
                    raise JaxvarsValueError(
                        PER_LANE_ASSIGNMENT.format(name=variable.name)
                    ) from None
            raise
        _lift.apply(split, new_split)
        _lift.apply(broadcast, new_broadcast)
        return _lift.restore_returned(out)

    return mapped


def _builds(axes: Any) -> bool:
    """Whether ``variable_axes`` asks to build new variables: an int or name patterns
    only (naming existing Variables or Modules means computing with them)."""
    if isinstance(axes, int):
        return True
    return bool(axes) and all(isinstance(key, re.Pattern) for key, _ in axes)


def _ensemble(fn: Callable[[], Any], axes: Any, size: int, out_axes: Any) -> Any:
    """Build ``size`` members with ``fn`` and stack their variables: an ensemble.

    Each member is ``fn`` run eagerly, drawing its own random numbers; members
    after the first are built in a scratch store, so names never clash. Every
    variable the first member created that ``variable_axes`` names then holds
    all members' values stacked on its axis; the first member's objects are
    returned, and arrays in the result are stacked on ``out_axes``.
    """
    from ._store import Store  # a late import: stores import variables

    with _trace.collecting_creations() as created:
        first = fn()
    if not created:
        raise JaxvarsValueError(
            "jv.vmap over no arguments with axis_size= and variable_axes= (an int or name "
            "patterns) builds an ensemble, but the function created no variable. To compute "
            "with existing variables, name them: variable_axes={module: 0}."
        )
    members, outs = [created], [first]
    for member in range(1, size):
        with Store(), _trace.collecting_creations() as made:
            outs.append(fn())
        if len(made) != len(created):
            raise JaxvarsValueError(
                f"jv.vmap: member {member} created {len(made)} variables, member 0 created "
                f"{len(created)}; every member of an ensemble must be built the same way."
            )
        members.append(made)
    for position, variable in enumerate(created):
        axis = _axis(axes, variable)
        if axis is not None:
            # A new variable, in no compiled code yet: its shape may still grow.
            variable._array = jnp.stack([m[position]._array for m in members], axis=axis)
    arrays = [jax.tree.leaves(out, is_leaf=_is_object) for out in outs]
    leaves, treedef = jax.tree_util.tree_flatten(first, is_leaf=_is_object)
    axis = out_axes if isinstance(out_axes, int) else 0
    stacked = [
        leaf if _is_object(leaf) else jnp.stack([a[i] for a in arrays], axis=axis)
        for i, leaf in enumerate(leaves)
    ]
    return jax.tree_util.tree_unflatten(treedef, stacked)


def _as_tuple(in_axes: Any, n: int) -> tuple[Any, ...]:
    return tuple(in_axes) if isinstance(in_axes, (tuple, list)) else (in_axes,) * n


# -- remat -----------------------------------------------------------------------------------------


def remat(
    fn: Callable[..., Any], *, policy: Any = None, static_argnums: int | Sequence[int] = ()
) -> Callable[..., Any]:
    """``jax.checkpoint`` whose ``fn`` may read and assign variables.

    Values and gradients equal those without it; activations are recomputed
    in the backward pass instead of stored. Assignments inside happen once
    per call, never again during the recomputation.

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

    @functools.wraps(fn)
    @_locked
    def rematerialised(*args: Any) -> Any:
        fixed = {i: a for i, a in enumerate(args) if i in statics}
        dynamic = [a for i, a in enumerate(args) if i not in statics]

        def bound(*dyn: Any) -> Any:
            rest = iter(dyn)
            return fn(*[fixed[i] if i in fixed else next(rest) for i in range(len(args))])

        assigned = _lift.touched(bound, *dynamic)[0]
        pure = jax.checkpoint(_lift.pure_of(bound, assigned, what="jv.remat"), policy=policy)
        out, new_values = pure(_lift.snapshot(assigned), *dynamic)
        _lift.apply(assigned, new_values)
        return _lift.restore_returned(out)

    return rematerialised


# -- eval_shape --------------------------------------------------------------------------------


def eval_shape(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` without computing or allocating anything, as ``jax.eval_shape`` does.

    Variables created inside are abstract: they have ``.name``, ``.shape``,
    ``.dtype``, ``.sharding`` (under ``jv.sharding_rules``) and ``.trainable``
    but no value (``v.is_abstract``); reading or computing with one raises an
    error naming it, and assigning it (``jv.restore`` does) gives it a value.
    Modules, ``get_variable``, Optimizers and sharding rules all work. Existing
    variables are not changed. Arrays in the result come back as
    ``jax.ShapeDtypeStruct``; Variables and Modules as themselves.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxvars as jv
        >>> big = jv.eval_shape(lambda: jv.Variable(jnp.zeros((2**16, 2**15)), name="big"))
        >>> big.shape, big.is_abstract
        ((65536, 32768), True)
    """
    kept: list[Any] = []

    def run(*call_args: Any, **call_kwargs: Any) -> Any:
        # Assignments (a random draw, say) land in this frame and are dropped.
        out, _ = _lift.run_pure(fn, [], [], call_args, call_kwargs, records=True)
        leaves, treedef = jax.tree_util.tree_flatten(out, is_leaf=_is_object)
        kept.append((leaves, treedef))
        return [x for x in leaves if not _is_object(x) and isinstance(x, jax.Array)]

    token = _trace.abstract.set(True)
    try:
        arrays = iter(jax.eval_shape(run, *args, **kwargs))
    finally:
        _trace.abstract.reset(token)
    leaves, treedef = kept[-1]
    leaves = [next(arrays) if not _is_object(x) and isinstance(x, jax.Array) else x for x in leaves]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _is_object(x: Any) -> bool:
    return isinstance(x, (Variable, Module))
