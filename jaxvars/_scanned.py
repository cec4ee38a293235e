"""Modules and Variables among jv.scan's scanned arguments: sliced per step, as NNX's.

``nnx.scan(f, in_axes=(nnx.Carry, 0))(x, self.blocks)`` scans over a stacked
Module (``jv.vmap`` over a constructor makes one). jv.scan takes it among
``xs`` the same way: the object leaves the arrays JAX scans, its variables
become per-iteration along axis 0 (as ``variable_axes={module: 0}`` makes
them), and each step's ``x`` holds the object again, its variables seen as
the step's slices and their assignments written to that slice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from ._errors import JaxvarsValueError
from ._module import Module, variables_of
from ._variable import Variable


def _is_state(x: Any) -> bool:
    return isinstance(x, (Module, Variable))


def split_state(xs: Any) -> tuple[Any, list[Variable], Callable[[Any], Any] | None]:
    """``xs`` as JAX scans it (its Modules and Variables taken out), their variables,
    and a function putting the objects back into one step's ``x`` (None: none held)."""
    leaves, treedef = jax.tree_util.tree_flatten(xs, is_leaf=_is_state)
    held = {i: leaf for i, leaf in enumerate(leaves) if _is_state(leaf)}
    if not held:
        return xs, [], None
    arrays = [leaf for i, leaf in enumerate(leaves) if i not in held]
    variables = [v for obj in held.values() for v in variables_of(obj)]
    for variable in variables:
        if not variable.shape:
            raise JaxvarsValueError(
                f"jv.scan: variable '{variable.name}' in xs is a scalar, with no axis 0 to scan "
                "over (one slice per iteration). Stack one value per iteration, or read it in "
                "the body instead of passing it in xs."
            )

    def step_x(sliced: list[Any]) -> Any:
        rest = iter(sliced)
        return jax.tree_util.tree_unflatten(
            treedef, [held[i] if i in held else next(rest) for i in range(len(leaves))]
        )

    return arrays, variables, step_x


def per_step(axes: Any, variables: list[Variable], axis_of: Callable[[Any, Variable], Any]) -> Any:
    """``variable_axes`` (normalised) with ``variables`` split along axis 0 first."""
    for variable in variables:
        if axis_of(axes, variable) not in (None, 0):
            raise JaxvarsValueError(
                f"jv.scan: variable '{variable.name}' is in xs, which scans it along axis 0, "
                f"and variable_axes gives it axis {axis_of(axes, variable)}. Give it one of "
                "the two: in xs (axis 0), or only in variable_axes."
            )
    if isinstance(axes, int):  # every variable is split already
        return axes
    return [(v, 0) for v in variables] + (axes or [])
