"""jv.vmap: ``jax.vmap`` over a function that reads and assigns variables, and ensembles.

Variables are broadcast (every lane reads one value) or split (lane ``i``
reads and assigns slice ``i``), as ``variable_axes`` says; the lifting is
the shared path of ``_lift``, with ``variable_axes`` read as for ``jv.scan``.
Called eagerly on no arguments with ``axis_size`` and ``variable_axes`` an
int or name patterns, ``jv.vmap`` builds an ensemble instead.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

import jax
import jax.numpy as jnp

from . import _lift, _trace
from ._errors import JaxvarsValueError
from ._explain import with_path
from ._jit_key import is_object
from ._lifted import axes_of, axis_of, check_splits, eager, locked, splits
from ._store import Store
from ._variable import Variable

_fresh = itertools.count()

P = ParamSpec("P")
R = TypeVar("R")


PER_LANE_ASSIGNMENT = (
    "jv.vmap: variable '{name}' is broadcast (each lane reads the same value), but "
    "the value assigned to it differs per lane. Split it over the mapped axis with "
    "variable_axes={{...: axis}}, or assign a value that does not depend on the lane, "
    "e.g. a reduction over axis_name: jax.lax.pmean(x, axis_name)."
)


def _mapped_size(args: tuple[Any, ...], in_axes: tuple[Any, ...]) -> int | None:
    """The number of lanes, from the first argument mapped over a plain axis (or None)."""
    for arg, axis in zip(args, in_axes, strict=True):
        leaves = jax.tree_util.tree_leaves(arg)
        if isinstance(axis, int) and leaves and hasattr(leaves[0], "shape"):
            return int(leaves[0].shape[axis])
    return None


def vmap(
    fn: Callable[P, R],
    in_axes: Any = 0,
    out_axes: Any = 0,
    *,
    axis_size: int | None = None,
    axis_name: Any = None,
    variable_axes: Any = None,
) -> Callable[P, R]:
    """``jax.vmap`` whose ``fn`` may read and assign variables.

    Variables not in ``variable_axes`` are broadcast: every lane reads the
    same value, and may assign it a value that does not depend on the lane
    (a reduction over ``axis_name``, say); a value that differs per lane is
    an error naming the variable. Variables in ``variable_axes`` (as for
    ``jv.scan``, or an int meaning every variable) are split: lane ``i``
    reads and assigns slice ``i``. Keyword arguments are mapped over axis 0,
    as ``jax.vmap`` maps them (``in_axes`` covers the positional ones).

    Called eagerly on no arguments with ``axis_size=n`` and ``variable_axes``
    an int or name patterns, it builds an ensemble: ``fn`` runs ``n`` times,
    and each variable it creates holds the members' values stacked on its
    axis, its ``trainable`` mask too (a bool while every member agrees).

    Returns:
        A function with ``fn``'s signature and result type, as ``jax.vmap``
        is typed: the types are ``fn``'s, the arrays gain the mapped axis
        (``out_axes``), and Variables and Modules returned are themselves.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import jaxvars as jv
        >>> mean = jv.Variable(0.0, name="mean")
        >>> def f(x):
        ...     mean.assign(jax.lax.pmean(x, "batch"))
        ...     return x - mean
        >>> jv.vmap(f, axis_name="batch")(jnp.array([1.0, 3.0])).tolist(), float(mean)
        ([-1.0, 1.0], 2.0)
        >>> jv.vmap(lambda x, *, scale: x * scale)(jnp.ones(2), scale=jnp.array([2.0, 3.0]))
        Array([2., 3.], dtype=float32)
    """
    axes = axes_of(variable_axes, "jv.vmap")
    call: Callable[..., Any] = fn  # called with lane arguments, not P's

    # An axis name even when none is given: random draws fold in the lane index.
    name = axis_name if axis_name is not None else f"jaxvars_vmap_{next(_fresh)}"

    def in_lane(*lane_args: Any, keywords: bool = False) -> Any:
        token = _trace.lanes.set((*_trace.lanes.get(), name))
        try:
            if keywords:  # the last positional argument holds the keyword arguments
                *positional, keyword_args = lane_args
                return call(*positional, **keyword_args)
            return call(*lane_args)
        finally:
            _trace.lanes.reset(token)

    @functools.wraps(fn)
    @locked
    def mapped(*given: P.args, **kwargs: P.kwargs) -> R:
        args: tuple[Any, ...] = given
        in_axes_all = _as_tuple(in_axes, len(args))
        lane = in_lane
        if kwargs:
            # As jax.vmap does, keywords are mapped over axis 0. They travel as one
            # more positional argument, so that the lifting path needs no keywords.
            _check_in_axes(in_axes, len(args))
            args, in_axes_all = (*args, kwargs), (*in_axes_all, 0)
            lane = functools.partial(in_lane, keywords=True)

        def run_vmap(f: Callable[..., Any], ins: Any, outs: Any) -> Callable[..., Any]:
            return jax.vmap(f, in_axes=ins, out_axes=outs, axis_size=axis_size, axis_name=name)

        if eager() and not args and axis_size is not None and _builds(axes):
            return _ensemble(call, axes, axis_size, out_axes)
        # One trace: the split variables (those variable_axes maps) must be mapped
        # inputs, so they are guessed; the assigned broadcast ones are found by the
        # trace (their outputs, unmapped, need no axes in advance). A split variable
        # the guess missed takes one more trace with it as an input.
        size = axis_size if axis_size is not None else _mapped_size(args, in_axes_all)
        lifting = _lift.Lifting(
            "jv.vmap",
            [fn],
            args,
            split=lambda v: axis_of(axes, v) is not None,
            fits=lambda v, value: splits(v, jnp.shape(value), axes, size),  # else no guess
        )
        broadcast: list[Variable] = []

        def batched(split: list[Variable], broadcast_axes: Any) -> Callable[..., Any]:
            def pure(split_values: list[Any], *call_args: Any) -> Any:
                # Broadcast variables enter through the enclosing frame, unmapped.
                out, frame = lifting.run(lane, split, split_values, call_args)
                broadcast[:] = [v for v in frame.assigned if axis_of(axes, v) is None]
                values = frame.values
                ends = [values.get(v, value) for v, value in zip(split, split_values, strict=True)]
                return _lift.mark_returned(out), ends, [values[v] for v in broadcast]

            split_axes = [axis_of(axes, v) for v in split]
            check_splits("jv.vmap", split, lifting.inputs(split), cast(list[int], split_axes), size)
            ins, outs = (split_axes, *in_axes_all), (out_axes, split_axes, broadcast_axes)
            return run_vmap(pure, ins, outs)

        def attempt(split: list[Variable]) -> Any:
            try:
                return batched(split, None)(lifting.inputs(split), *args)
            except ValueError as e:
                message = str(e)
                if "out_axes is None" not in message and "axis spec None" not in message:
                    raise
                # Which broadcast variable got a per-lane value: try each alone.
                for i, variable in enumerate(broadcast):
                    only = [None if j == i else 0 for j in range(len(broadcast))]
                    try:
                        jax.eval_shape(batched(split, only), lifting.inputs(split), *args)
                    except ValueError:
                        raise with_path(
                            variable,
                            JaxvarsValueError(PER_LANE_ASSIGNMENT.format(name=variable.name)),
                        ) from None
                raise

        split, (out, new_split, new_broadcast) = lifting.attempts(attempt)
        lifting.finish(
            {
                **dict(zip(split, new_split, strict=True)),
                **dict(zip(broadcast, new_broadcast, strict=True)),
            }
        )
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
    all members' values, and their ``trainable`` settings, stacked on its
    axis; the first member's objects are returned, and arrays in the result
    are stacked on ``out_axes``.
    """
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
        axis = axis_of(axes, variable)
        if axis is not None:
            copies = [m[position] for m in members]
            trainable = _stacked_trainable(copies, axis)
            # A new variable, in no compiled code yet: its shape may still grow.
            variable._array = jnp.stack([v._array for v in copies], axis=axis)
            variable.trainable = trainable
    arrays = [jax.tree.leaves(out, is_leaf=is_object) for out in outs]
    leaves, treedef = jax.tree_util.tree_flatten(first, is_leaf=is_object)
    axis = out_axes if isinstance(out_axes, int) else 0
    stacked = [
        leaf if is_object(leaf) else jnp.stack([a[i] for a in arrays], axis=axis)
        for i, leaf in enumerate(leaves)
    ]
    return jax.tree_util.tree_unflatten(treedef, stacked)


def _stacked_trainable(members: list[Any], axis: int) -> Any:
    """The members' ``trainable`` settings stacked as their values are; one bool
    if all members have the same bool, else a mask (a bool fills its member)."""
    settings = [v.trainable for v in members]
    if all(s is True for s in settings) or all(s is False for s in settings):
        return settings[0]
    return jnp.stack(
        [jnp.broadcast_to(s, v.shape) for s, v in zip(settings, members, strict=True)], axis=axis
    )


def _check_in_axes(in_axes: Any, n: int) -> None:
    """jax.vmap's check, made here: with keywords it would count one argument too many."""
    if isinstance(in_axes, (tuple, list)) and len(in_axes) != n:
        raise JaxvarsValueError(
            "jv.vmap: in_axes must be an int, None, or a tuple with one entry per "
            f"positional argument (keyword arguments are mapped over axis 0); got "
            f"{len(in_axes)} entries for {n} positional arguments."
        )


def _as_tuple(in_axes: Any, n: int) -> tuple[Any, ...]:
    return tuple(in_axes) if isinstance(in_axes, (tuple, list)) else (in_axes,) * n
