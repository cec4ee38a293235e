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

from ._module import Module
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
    variables = [
        v for obj in held.values() for v in (obj.variables if isinstance(obj, Module) else (obj,))
    ]

    def step_x(sliced: list[Any]) -> Any:
        rest = iter(sliced)
        return jax.tree_util.tree_unflatten(
            treedef, [held[i] if i in held else next(rest) for i in range(len(leaves))]
        )

    return arrays, variables, step_x


def per_step(axes: Any, variables: list[Variable]) -> Any:
    """``variable_axes`` (normalised) with ``variables`` split along axis 0 first."""
    if isinstance(axes, int):  # every variable is split already
        return axes
    return [(v, 0) for v in variables] + (axes or [])
