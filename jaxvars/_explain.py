"""Errors raised by JAX inside a jv.jit trace, explained in terms of variables.

``if v > 0:`` on a variable inside jv.jit reaches JAX's bool conversion of a
tracer, whose message names a jaxpr operation, not the variable. This module
finds the user's line that failed and the variables named on it, and says
what to do instead.
"""

from __future__ import annotations

import linecache
import re
import traceback
from typing import Any

import jax
from jax._src import traceback_util

from ._errors import JaxvarsTypeError

CONTROL_FLOW_ON_VARIABLE = (
    "jv.jit({fn}): Python needs a concrete value at {where} (`{line}`), but inside jv.jit "
    "{names} holds a traced value, known only when the compiled step runs. Choose with "
    "jv.cond(pred, true_fn, false_fn) or jnp.where(pred, a, b) instead of `if`/`while`/"
    "bool(); or make the choice static (a plain Python attribute, or a static argument)."
)

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def control_flow_error(error: Exception, fn_name: str) -> JaxvarsTypeError | None:
    """A clearer error for JAX's ``ConcretizationTypeError`` on a variable, or None.

    The new error keeps the original's traceback (which ends at the user's
    line), so it points where the original did.
    """
    if not isinstance(error, jax.errors.ConcretizationTypeError):
        return None
    user = [
        (frame, lineno)
        for frame, lineno in traceback.walk_tb(error.__traceback__)
        if traceback_util.include_frame(frame)
    ]
    if not user:
        return None
    frame, lineno = user[-1]
    line = linecache.getline(frame.f_code.co_filename, lineno).strip()
    names = [f"variable '{v.name}' (`{expr}`)" for expr, v in _variables_named(line, frame)]
    if not names:
        return None
    where = f"{frame.f_code.co_filename}:{lineno}"
    message = CONTROL_FLOW_ON_VARIABLE.format(
        fn=fn_name, where=where, line=line, names=" and ".join(names)
    )
    return JaxvarsTypeError(message).with_traceback(error.__traceback__)


def _variables_named(line: str, frame: Any) -> list[tuple[str, Any]]:
    """The Variables that the (dotted) names on ``line`` refer to in ``frame``."""
    from ._variable import Variable  # imported here: the variable module imports this one's users

    found: dict[int, tuple[str, Any]] = {}
    for expr in _DOTTED.findall(line):
        head, *attrs = expr.split(".")
        scopes = (frame.f_locals, frame.f_globals)
        value = next((scope[head] for scope in scopes if head in scope), None)
        for attr in attrs:
            if isinstance(value, Variable):
                break
            value = _plain_attribute(value, attr)
        if isinstance(value, Variable):
            found.setdefault(id(value), (expr, value))
    return list(found.values())


def _plain_attribute(obj: Any, attr: str) -> Any:
    """``obj.attr`` from the instance's own dict only: looking runs no user code."""
    try:
        return vars(obj).get(attr)
    except TypeError:
        return None
