"""Errors explained in the user's terms: which variable, where it is held, which line.

- ``if v > 0:`` on a variable inside jv.jit reaches JAX's bool conversion of a
  tracer, whose message names a jaxpr operation, not the variable: we find the
  user's line that failed and the variables named on it, and say what to do.
- An error about a variable a Module holds also names its attribute path
  (``net.bn.running_var``): unnamed variables are all called ``Variable``.
"""

from __future__ import annotations

import contextlib
import functools
import linecache
import re
import traceback
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import jax
from jax.extend.core import subjaxprs

from . import _placement
from ._errors import JaxvarsError, JaxvarsTypeError, JaxvarsValueError, boundary
from ._jax_private import include_frame

CONTROL_FLOW_ON_VARIABLE = (
    "jv.jit({fn}): Python needs a concrete value at {where} (`{line}`), but inside jv.jit "
    "{names} holds a traced value, known only when the compiled step runs. Choose with "
    "jv.cond(pred, true_fn, false_fn) or jnp.where(pred, a, b) instead of `if`/`while`/"
    "bool(); or make the choice static (a plain Python attribute, or a static argument)."
)

INCOMPATIBLE_DEVICES = (
    "jv.jit({fn}): the variables and arrays of this call live on devices that cannot "
    "compute together:\n  {where}\nCommit them to the same device (jv.device, sharding=), "
    "or move an array with jax.device_put."
)


CREATED_IN_TRACE = (
    "jv.jit({fn}): variable '{name}' is created on every trace of the function, so it "
    "could never carry state from one call to the next. Create it outside the jitted "
    "function, create it with jv.get_variable (made on the first call, reused after), "
    "or create it only once (e.g. `if not hasattr(self, 'w'): self.w = jv.Variable(...)`)."
)
CREATED_IN_BODY = (
    "{what}: variable '{name}' is created and assigned inside it, so it is created on every "
    "trace and could never carry state from one call to the next. Create it outside, with "
    "jv.get_variable (made on the first call, reused after), or only once (e.g. `if not "
    "hasattr(self, 'w'): self.w = jv.Variable(...)`)."
)
ASSIGNS_UNDER_RAW_TRANSFORM = (
    "jv.jit({fn}) assigns variables ({names}) but was called inside a JAX transform that "
    "jaxvars does not control (jax.vmap, jax.grad, jax.jit). Call it outside the "
    "transform, or use jv.grad / jv.fori_loop / jv.jit instead."
)


E = TypeVar("E", bound=JaxvarsError)

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


@contextlib.contextmanager
def control_flow_explained(fn_name: str) -> Iterator[None]:
    """Turn JAX's concrete-value errors about variables into ``control_flow_error``."""
    try:
        yield
    except jax.errors.ConcretizationTypeError as e:  # `if v > 0:` on a variable
        raise (control_flow_error(e, fn_name) or e) from None


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
        if include_frame(frame)
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


def with_path(variable: Any, error: E) -> E:
    """``error`` naming, beside the variable's name, where a Module holds it."""
    if variable._held_by is not None:
        from ._module import attribute_path  # imported here: modules are built on variables

        path = attribute_path(variable)
        quoted = f"'{variable._name}'"
        if path and error.args and quoted in str(error.args[0]):
            error.args = (str(error.args[0]).replace(quoted, f"{quoted} ({path})", 1),)
    return error


def public(method: Callable[..., Any]) -> Callable[..., Any]:
    """A public method: its errors name the Module attribute path of the variable
    (``'batch_norm/Variable' (net.bn.running_var)``), and tracebacks end in user code."""

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except JaxvarsError as e:
            raise with_path(self, e) from None

    return boundary(call)


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


def device_error(name: str, assigned: list[Any], read: list[Any], arrays: Any) -> JaxvarsValueError:
    """The error for a jv.jit call whose variables and arrays live on clashing devices."""
    describe = _placement.describe_array
    where = [f"variable '{v.name}': {describe(v._array)}" for v in (*assigned, *read)]
    where += [
        f"argument array of shape {tuple(a.shape)}: {describe(a)}"
        for a in arrays
        if isinstance(a, jax.Array) and a.committed
    ]
    return JaxvarsValueError(INCOMPATIBLE_DEVICES.format(fn=name, where="\n  ".join(where)))


def may_fail_at_run_time(jaxpr: Any) -> bool:
    """Whether a computation holds a callback (Python run by the step, which can raise)."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name.endswith("callback"):
            return True
    return any(may_fail_at_run_time(inner) for inner in subjaxprs(jaxpr))
