"""What an Optimizer updates: the variables its ``wrt`` selects, of those that train."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from ._errors import JaxvarsTypeError, JaxvarsValueError
from ._module import Module, variables_of
from ._variable import Variable

Selector = Callable[[dict[str, Variable]], dict[str, Variable]]

WRT_KINDS = (
    '"trainable", a regular expression matched against paths and names, a predicate '
    "taking a Variable, or a list of Modules and Variables"
)


def trains(variable: Variable) -> bool:
    """Whether ``variable`` can get updates: trainable (or masked), of an inexact dtype."""
    return variable.trainable is not False and bool(jnp.issubdtype(variable.dtype, jnp.inexact))


def selector(wrt: Any) -> Selector:
    """``{key: variable} -> {key: variable}``: those ``wrt`` selects that train.

    It is asked again whenever the optimiser brings its state up to date, so
    layers built later and ``trainable`` set since are followed.
    """
    pick = _picker(wrt)
    return lambda variables: {k: v for k, v in pick(variables).items() if trains(v)}


def check_selects(wrt: Any, variables: dict[str, Variable]) -> None:
    """Refuse a ``wrt`` that selects none of the target's variables (a typo'd
    pattern), or lists a variable the target does not hold."""
    if wrt is None or wrt == "trainable":
        return
    if isinstance(wrt, (list, tuple)):
        held = {id(v) for v in variables.values()}
        for item in wrt:
            if any(id(v) not in held for v in variables_of(item)):
                what = "module" if isinstance(item, Module) else "variable"
                raise JaxvarsValueError(
                    f"Optimizer: wrt lists {what} '{item.name}', which the target does not "
                    "hold; the optimiser updates only its target's variables."
                )
    if variables and not _picker(wrt)(variables):
        raise JaxvarsValueError(
            f"Optimizer: wrt={_short(wrt)} selects none of the target's variables "
            f"({', '.join(list(variables)[:8])}{', ...' if len(variables) > 8 else ''})."
        )


def _picker(wrt: Any) -> Callable[[dict[str, Variable]], dict[str, Variable]]:
    """What ``wrt`` selects of ``{key: variable}``, whether it trains or not."""
    if wrt is None or wrt == "trainable":
        return lambda variables: variables
    if isinstance(wrt, str):
        try:
            pattern = re.compile(wrt)
        except re.error as error:
            raise JaxvarsValueError(
                f"Optimizer: wrt={wrt!r} is not a regular expression ({error})."
            ) from None
        return lambda variables: {
            k: v for k, v in variables.items() if pattern.match(k) or pattern.match(v.name)
        }
    if isinstance(wrt, (Module, Variable, list, tuple)):
        return _members(list(wrt) if isinstance(wrt, (list, tuple)) else [wrt])
    if callable(wrt):
        return lambda variables: {k: v for k, v in variables.items() if _asked(wrt, v)}
    raise JaxvarsTypeError(f"Optimizer: wrt must be {WRT_KINDS}; got {type(wrt).__name__}.")


def _members(items: list[Any]) -> Callable[[dict[str, Variable]], dict[str, Variable]]:
    bad = sorted({type(x).__name__ for x in items if not isinstance(x, (Module, Variable))})
    if bad or not items:
        raise JaxvarsTypeError(
            "Optimizer: a wrt list holds Modules and Variables; got "
            f"{', '.join(bad) if bad else 'an empty list'}."
        )

    def pick(variables: dict[str, Variable]) -> dict[str, Variable]:
        # Modules are asked each time: one built lazily gains variables.
        listed = {id(v) for item in items for v in variables_of(item)}
        return {k: v for k, v in variables.items() if id(v) in listed}

    return pick


def _asked(predicate: Callable[[Variable], Any], variable: Variable) -> bool:
    answer = predicate(variable)
    if not isinstance(answer, (bool, np.bool_)):
        raise JaxvarsTypeError(
            f"Optimizer: the wrt predicate must return True or False; for variable "
            f"'{variable.name}' it returned {type(answer).__name__}."
        )
    return bool(answer)


def _short(wrt: Any) -> str:
    return repr(wrt) if isinstance(wrt, str) else type(wrt).__name__
