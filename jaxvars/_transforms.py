"""jv.grad, jv.value_and_grad and jv.fori_loop: JAX transforms over stateful functions.

Each lifts its function with the shared path in ``_lift`` (snapshot, run
pure, collect, apply); ``jv.jit`` and its cache live in ``_jit``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, ParamSpec, TypeVar, overload

import jax
import jax.numpy as jnp

from . import _lift, _random, _trace
from ._errors import JaxvarsTypeError, JaxvarsValueError, boundary
from ._jit import jit
from ._jit_key import is_object
from ._module import Module
from ._variable import Variable

_current_frame = _trace.current.get

P = ParamSpec("P")
A = TypeVar("A")  # the aux value
K = TypeVar("K")  # the keys of a dict of variables
T = TypeVar("T")  # a loop carry


NO_VARIABLES = (
    "jv.grad: no variable was given to differentiate with respect to ({what}). Pass the "
    "variables as wrt: a Variable, a Module, or a list/tuple/dict of Variables."
)


def _wrt_variables(wrt: Any) -> tuple[list[Variable], Callable[[list[Any]], Any]]:
    """The variables of ``wrt`` and a function putting gradients in its structure."""
    if isinstance(wrt, Variable):
        return [wrt], lambda grads: grads[0]
    if isinstance(wrt, Module):
        variables = list(wrt.trainable_variables)
        if not variables:
            raise JaxvarsValueError(
                NO_VARIABLES.format(what=f"module '{wrt.name}' has no trainable variables")
            )
        return variables, tuple
    leaves, treedef = jax.tree_util.tree_flatten(wrt, is_leaf=is_object)
    bad = [type(x).__name__ for x in leaves if not isinstance(x, Variable)]
    if bad:
        raise JaxvarsTypeError(
            "wrt must be a Variable, a Module, or a list/tuple/dict of Variables; "
            f"found {', '.join(sorted(set(bad)))} in it."
        )
    if not leaves:
        raise JaxvarsValueError(NO_VARIABLES.format(what=f"wrt is an empty {type(wrt).__name__}"))
    return leaves, lambda grads: jax.tree_util.tree_unflatten(treedef, grads)


def masked_gradient(variable: Variable, grad: Any) -> Any:
    """``grad`` with zeros where ``variable`` is not trainable (all of it, or its mask)."""
    trainable = variable.trainable
    if trainable is True:
        return grad
    if trainable is False:
        return jnp.zeros_like(grad)
    return jnp.where(trainable, grad, jnp.zeros_like(grad))


def _build(fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
    """Build the module ``fn`` is differentiated for (it has no variable yet) by
    calling ``fn`` once, as Keras builds a model at its first call inside
    ``tape.gradient``. Only the random stream's advance is kept of what the call
    assigned: the variables start as if the module had been built outside, and
    the gradient's call draws new keys."""
    _, frame = _lift.run_pure(fn, [], [], args, kwargs, records=False)
    streams = [v for v in frame.assigned if _random.is_stream(v)]
    _lift.apply(streams, _lift.collect(frame, streams))


def _value_and_grad_impl(
    fn: Callable[..., Any], wrt: Any, has_aux: bool, args: Any, kwargs: Any
) -> tuple[Any, Any, Any]:
    if isinstance(wrt, Module) and not wrt.variables:
        _build(fn, args, kwargs)
    wanted, restructure = _wrt_variables(wrt)
    # Integer and bool variables (a step counter left trainable=True) have no
    # gradient: they get zeros, as frozen ones do, and are not differentiated.
    variables = [v for v in wanted if jnp.issubdtype(v.dtype, jnp.inexact)]
    written: list[Variable] = []

    def loss_and_aux(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        result = fn(*args, **kwargs)
        value, aux = result if has_aux else (result, None)
        # A Variable as the loss: its value as the frame sees it (a tracer here).
        return (value._value if isinstance(value, Variable) else value), aux

    def inner(values: list[Any]) -> Any:
        (value, aux), frame = _lift.run_pure(
            loss_and_aux, variables, values, args, kwargs, records=False
        )
        written[:] = frame.assigned
        return value, (_lift.mark_returned(aux), _lift.collect(frame, written))

    with _trace.STATE_LOCK:  # eagerly, one atomic update, as a jv.jit step is
        start = _lift.snapshot(variables)
        (value, (aux, written_values)), grads = jax.value_and_grad(inner, has_aux=True)(start)
        # Writes made by fn (random streams, running statistics) land after the
        # gradient, so the gradient saw the variables as they were.
        _lift.apply(written, written_values)
    by_variable = {id(v): masked_gradient(v, g) for v, g in zip(variables, grads, strict=True)}
    grads = [by_variable.get(id(v), None) for v in wanted]
    grads = [
        jnp.zeros(v.shape, v.dtype) if g is None else g for v, g in zip(wanted, grads, strict=True)
    ]
    return value, _lift.restore_returned(aux), restructure(grads)


# The gradients take wrt's structure: one array per variable (Module: a tuple in
# trainable_variables order). Nested structures and a has_aux that is a plain
# bool fall back to Any.
@overload
def grad(
    fn: Callable[P, Any], wrt: Variable, *, has_aux: Literal[False] = False
) -> Callable[P, jax.Array]: ...
@overload
def grad(
    fn: Callable[P, tuple[Any, A]], wrt: Variable, *, has_aux: Literal[True]
) -> Callable[P, tuple[jax.Array, A]]: ...
@overload
def grad(
    fn: Callable[P, Any], wrt: Module | tuple[Variable, ...], *, has_aux: Literal[False] = False
) -> Callable[P, tuple[jax.Array, ...]]: ...
@overload
def grad(
    fn: Callable[P, tuple[Any, A]], wrt: Module | tuple[Variable, ...], *, has_aux: Literal[True]
) -> Callable[P, tuple[tuple[jax.Array, ...], A]]: ...
@overload
def grad(
    fn: Callable[P, Any], wrt: list[Variable], *, has_aux: Literal[False] = False
) -> Callable[P, list[jax.Array]]: ...
@overload
def grad(
    fn: Callable[P, tuple[Any, A]], wrt: list[Variable], *, has_aux: Literal[True]
) -> Callable[P, tuple[list[jax.Array], A]]: ...
@overload
def grad(
    fn: Callable[P, Any], wrt: dict[K, Variable], *, has_aux: Literal[False] = False
) -> Callable[P, dict[K, jax.Array]]: ...
@overload
def grad(
    fn: Callable[P, tuple[Any, A]], wrt: dict[K, Variable], *, has_aux: Literal[True]
) -> Callable[P, tuple[dict[K, jax.Array], A]]: ...
@overload
def grad(fn: Callable[P, Any], wrt: Any, *, has_aux: bool = False) -> Callable[P, Any]: ...
def grad(fn: Callable[..., Any], wrt: Any, *, has_aux: bool = False) -> Callable[..., Any]:
    """Gradient of the scalar ``fn(*args)`` with respect to the variables in ``wrt``.

    Works eagerly, inside ``jv.jit`` and ``jv.fori_loop``, and under
    ``jax.vmap`` (per-example gradients). A variable with ``trainable=False``
    gets a zero gradient; a masked one gets zeros where the mask is False.
    Assignments made by ``fn`` are applied after the gradient is computed.

    Args:
        fn: Returns a scalar, or ``(scalar, aux)`` with ``has_aux=True``.
        wrt: A Variable, a list/tuple/dict of Variables, or a Module (meaning
            its ``trainable_variables`` tuple, as of each call).
        has_aux: Whether ``fn`` returns ``(value, aux)``.

    Returns:
        A function of ``fn``'s arguments returning gradients shaped like
        ``wrt`` (an array for a Variable; a tuple for a Module; a list, tuple
        or dict of arrays for one of Variables), or ``(gradients, aux)`` with
        ``has_aux``. ``fn`` may return a Variable as its loss; Variables in
        ``aux`` are returned as themselves, its other leaves as arrays.

    Raises:
        ValueError: ``wrt`` holds no variable (an empty list, or a Module with
            no trainable variable).

    Example:
        >>> import jaxvars as jv
        >>> w = jv.Variable([1.0, 2.0])
        >>> jv.grad(lambda: (w * w).sum(), w)()
        Array([2., 4.], dtype=float32)
    """

    @boundary
    @functools.wraps(fn)
    def gradient(*args: Any, **kwargs: Any) -> Any:
        _, aux, grads = _value_and_grad_impl(fn, wrt, has_aux, args, kwargs)
        return (grads, aux) if has_aux else grads

    return gradient


# As grad's overloads; the value is always an array (a Variable loss: its value).
@overload
def value_and_grad(
    fn: Callable[P, Any], wrt: Variable, *, has_aux: Literal[False] = False
) -> Callable[P, tuple[jax.Array, jax.Array]]: ...
@overload
def value_and_grad(
    fn: Callable[P, tuple[Any, A]], wrt: Variable, *, has_aux: Literal[True]
) -> Callable[P, tuple[tuple[jax.Array, A], jax.Array]]: ...
@overload
def value_and_grad(
    fn: Callable[P, Any], wrt: Module | tuple[Variable, ...], *, has_aux: Literal[False] = False
) -> Callable[P, tuple[jax.Array, tuple[jax.Array, ...]]]: ...
@overload
def value_and_grad(
    fn: Callable[P, tuple[Any, A]], wrt: Module | tuple[Variable, ...], *, has_aux: Literal[True]
) -> Callable[P, tuple[tuple[jax.Array, A], tuple[jax.Array, ...]]]: ...
@overload
def value_and_grad(
    fn: Callable[P, Any], wrt: list[Variable], *, has_aux: Literal[False] = False
) -> Callable[P, tuple[jax.Array, list[jax.Array]]]: ...
@overload
def value_and_grad(
    fn: Callable[P, tuple[Any, A]], wrt: list[Variable], *, has_aux: Literal[True]
) -> Callable[P, tuple[tuple[jax.Array, A], list[jax.Array]]]: ...
@overload
def value_and_grad(
    fn: Callable[P, Any], wrt: dict[K, Variable], *, has_aux: Literal[False] = False
) -> Callable[P, tuple[jax.Array, dict[K, jax.Array]]]: ...
@overload
def value_and_grad(
    fn: Callable[P, tuple[Any, A]], wrt: dict[K, Variable], *, has_aux: Literal[True]
) -> Callable[P, tuple[tuple[jax.Array, A], dict[K, jax.Array]]]: ...
@overload
def value_and_grad(
    fn: Callable[P, Any], wrt: Any, *, has_aux: bool = False
) -> Callable[P, tuple[Any, Any]]: ...
def value_and_grad(
    fn: Callable[..., Any], wrt: Any, *, has_aux: bool = False
) -> Callable[..., Any]:
    """Like ``jv.grad``, also returning the value: ``(value, grads)``, or
    ``((value, aux), grads)`` with ``has_aux``. The value is an array (a
    Variable loss gives its value); the gradients are typed as ``jv.grad``'s.

    Example:
        >>> import jaxvars as jv
        >>> w = jv.Variable(3.0)
        >>> value, g = jv.value_and_grad(lambda: w * w, w)()
        >>> float(value), float(g)
        (9.0, 6.0)
    """

    @boundary
    @functools.wraps(fn)
    def both(*args: Any, **kwargs: Any) -> Any:
        value, aux, grads = _value_and_grad_impl(fn, wrt, has_aux, args, kwargs)
        return ((value, aux), grads) if has_aux else (value, grads)

    return both


@overload
def fori_loop(lower: Any, upper: Any, body: Callable[[Any, T], T], init_val: T) -> T: ...
@overload
def fori_loop(
    lower: Any, upper: Any, body: Callable[[Any, None], None], init_val: None = None
) -> None: ...
@boundary
def fori_loop(lower: Any, upper: Any, body: Callable[[Any, Any], Any], init_val: Any = None) -> Any:
    """``jax.lax.fori_loop`` whose ``body(i, carry) -> carry`` may read and assign variables.

    Runs many steps in one compiled loop, eagerly or inside ``jv.jit``; the
    variables ``body`` assigns are carried through the loop and written back
    at the end. ``i`` is a traced integer array.

    Returns:
        The final carry, of ``init_val``'s type (its leaves are arrays); None
        without ``init_val``.

    Example:
        >>> import jaxvars as jv
        >>> total = jv.Variable(0)
        >>> def body(i, carry):
        ...     total.assign_add(i)
        ...     return carry + 1
        >>> int(jv.fori_loop(0, 5, body, 0)), int(total)
        (5, 10)
    """
    if _current_frame() is None:
        return _eager_loop(lower, upper, body, init_val)
    with _trace.lifted_call():
        return _traced_loop(lower, upper, body, init_val)


def _traced_loop(lower: Any, upper: Any, body: Callable[[Any, Any], Any], init_val: Any) -> Any:
    lifting = _lift.Lifting("jv.fori_loop body", [body], [init_val])

    def attempt(variables: list[Variable]) -> Any:
        step_of = lifting.pure(body, variables, mark=False)

        def step(i: Any, carry: Any) -> Any:
            value, values = carry
            return step_of(values, i, value)

        return jax.lax.fori_loop(lower, upper, step, (init_val, lifting.inputs(variables)))

    variables, (value, ends) = lifting.attempts(attempt)
    lifting.finish(dict(zip(variables, ends, strict=True)))
    return value


def _run_loop(lower: Any, upper: Any, init_val: Any, body: Callable[[Any, Any], Any]) -> Any:
    return fori_loop(lower, upper, body, init_val)


# A loop called outside any transform, compiled. The body is an argument: its
# code is compiled per body (held weakly, as jax.jit holds functions), and
# jv.jit's guess of the variables it touches starts from the body itself.
_eager_loop_of = jit(_run_loop)


def _eager_loop(lower: Any, upper: Any, body: Callable[[Any, Any], Any], init_val: Any) -> Any:
    return _eager_loop_of(lower, upper, init_val, body)
