"""Regularization losses computed from the variables' current values."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp

from . import _losses
from ._collections import as_variable_list
from ._errors import JaxvarsValueError
from ._module import Module
from ._store import REGULARIZED, active_store
from ._variable import Variable

Scope = str | Module | Iterable[Variable] | None


def regularization_losses(scope: Scope = None) -> list[jax.Array]:
    """Each regularized variable's loss, ``regularizer(value)``, from its current value.

    Computed when called, so inside ``jv.grad`` the losses are differentiable
    and inside ``jv.jit`` they follow each step's values.

    Args:
        scope: None (every variable of the active store that has a regularizer),
            a scope string (those whose full name matches it from its start,
            ``re.match`` as TF), a Module (the losses it and its submodules added
            in their latest call, ``Module.add_loss``, then its variables') or a
            list of variables.

    Raises:
        ValueError: a regularizer that does not return a scalar (names the variable).

    Example:
        >>> import jaxvars as jv
        >>> with jv.Store():
        ...     w = jv.get_variable("w", initializer=[3.0, 4.0],
        ...                         regularizer=lambda x: 0.5 * (x**2).sum())
        ...     losses = [float(loss) for loss in jv.regularization_losses()]
        >>> losses
        [12.5]
    """
    added = _losses.losses(scope) if isinstance(scope, Module) else []
    return added + [_loss(v) for v in _regularized(scope)]


def regularization_loss(scope: Scope = None) -> jax.Array:
    """The sum of ``regularization_losses(scope)``: a float32 zero when there are none.

    The TF1 weight-decay pattern: ``loss = data_loss + jv.regularization_loss()``.

    Example:
        >>> import jaxvars as jv
        >>> with jv.Store():
        ...     with jv.variable_scope("layer", regularizer=lambda x: (x**2).sum()):
        ...         w = jv.get_variable("w", initializer=[1.0, 2.0])
        ...     float(jv.regularization_loss()), float(jv.regularization_loss("other"))
        (5.0, 0.0)
    """
    losses = regularization_losses(scope)
    if not losses:
        return jnp.zeros((), jnp.float32)
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    return total


def _regularized(scope: Scope) -> list[Variable]:
    if scope is None or isinstance(scope, str):
        members = active_store()._collection(REGULARIZED).members()
        return members if scope is None else [v for v in members if re.match(scope, v.name)]
    variables = as_variable_list(
        scope.variables if isinstance(scope, Module) else scope,
        "regularization_loss(scope=...): scope must be None, a scope name, a Module or a "
        "list of Variables",
    )
    return [v for v in variables if v.regularizer is not None]


def _loss(variable: Variable) -> Any:
    regularizer = variable.regularizer
    assert regularizer is not None
    loss = regularizer(variable.value)
    if jnp.shape(loss) != ():
        raise JaxvarsValueError(
            f"The regularizer of variable '{variable.name}' returned a value of shape "
            f"{jnp.shape(loss)}; a regularizer returns a scalar (sum its terms)."
        )
    return loss
