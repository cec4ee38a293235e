"""TF1-style sharing by name: variable_scope, get_variable, make_template."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import operator
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np

from . import _dtypes, _naming, _random, _trace
from ._errors import JaxvarsTypeError, JaxvarsValueError
from ._initializers import default_for
from ._store import active_store
from ._variable import Variable


class _AutoReuse:
    """The type of ``jv.AUTO_REUSE``: get a variable if it exists, else create it."""

    _instance: _AutoReuse | None = None

    def __new__(cls) -> _AutoReuse:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "jv.AUTO_REUSE"

    def __reduce__(self) -> str:
        return "AUTO_REUSE"


AUTO_REUSE = _AutoReuse()
Reuse = bool | _AutoReuse | None


class VariableScope:
    """An open or captured variable scope: its full name and its defaults.

    Obtained from ``with jv.variable_scope(...) as scope``. Entering it again
    (even inside another scope) reopens the same absolute name.

    Attributes:
        name: The full scope name, e.g. ``"filter/conv1"`` (``""`` at the top).
        reuse: None (create only), True (get only) or ``jv.AUTO_REUSE``.
        initializer: The default initializer of ``get_variable`` in this scope.
        dtype: The default dtype of ``get_variable`` in this scope.
    """

    def __init__(
        self, name: str, reuse: Reuse = None, initializer: Any = None, dtype: Any = None
    ) -> None:
        self.name = name
        self.reuse: Reuse = reuse
        self.initializer = initializer
        self.dtype = dtype

    def reuse_variables(self) -> None:
        """Switch this scope to reuse: ``get_variable`` gets existing variables."""
        self.reuse = True

    def __repr__(self) -> str:
        return f"<jaxvars.VariableScope {self.name!r} reuse={self.reuse!r}>"


_TOP = VariableScope("")
_current: contextvars.ContextVar[VariableScope] = contextvars.ContextVar(
    "jaxvars_variable_scope", default=_TOP
)


def current_scope() -> VariableScope:
    """The innermost open variable scope (the top scope, named ``""``, outside any)."""
    return _current.get()


@contextlib.contextmanager
def variable_scope(
    name_or_scope: str | VariableScope,
    reuse: Reuse = None,
    initializer: Any = None,
    dtype: Any = None,
) -> Iterator[VariableScope]:
    """Open a scope that prefixes variable names and sets ``get_variable`` defaults.

    Args:
        name_or_scope: A name, nested under the enclosing scope
            (``"filter/conv1"``), or a scope object, which keeps its absolute name.
        reuse: None (inherit; the top level creates only), True (get only) or
            ``jv.AUTO_REUSE`` (get if it exists, else create). Nested scopes
            inherit it; False means None and cannot switch off an inherited reuse.
        initializer: Default initializer of ``get_variable`` inside (inherited).
        dtype: Default dtype of ``get_variable`` inside (inherited).

    Yields:
        The open ``VariableScope``.

    Example:
        >>> import jaxvars as jv
        >>> with jv.Store(), jv.variable_scope("foo"):
        ...     with jv.variable_scope("bar"):
        ...         v = jv.get_variable("v", [1])
        >>> v.name
        'foo/bar/v'
    """
    if reuse is False:
        reuse = None
    if reuse is not None and reuse is not True and reuse is not AUTO_REUSE:
        raise JaxvarsValueError(f"reuse must be None, False, True or jv.AUTO_REUSE, got {reuse!r}.")
    parent = _current.get()
    if isinstance(name_or_scope, VariableScope):
        base = name_or_scope
        full = base.name
    else:
        base = parent
        name = _naming.check_name(name_or_scope, "variable scope")
        full = f"{parent.name}/{name}" if parent.name else name
    scope = VariableScope(
        full,
        reuse=reuse or base.reuse or parent.reuse,
        initializer=initializer if initializer is not None else base.initializer,
        dtype=dtype if dtype is not None else base.dtype,
    )
    token = _current.set(scope)
    try:
        with _naming.prefix(full):
            yield scope
    finally:
        _current.reset(token)


def get_variable(
    name: str,
    shape: tuple[int, ...] | list[int] | None = None,
    dtype: Any = None,
    initializer: Any = None,
    trainable: Any = True,
) -> Variable:
    """Get the variable ``scope/name`` from the active store, or create it.

    Whether it gets or creates follows the scope's ``reuse``. The full name is
    the enclosing variable scopes' names joined with ``/``; ``name_scope`` does
    not prefix it.

    Args:
        name: The name inside the current variable scope.
        shape: The shape; may be omitted when ``initializer`` is a constant.
        dtype: The dtype; None means the scope's dtype, else the constant
            initializer's dtype, else float32.
        initializer: A ``(key, shape, dtype) -> array`` callable (e.g. from
            ``jax.nn.initializers``), an array-like constant, or None (the
            scope's initializer, else Glorot uniform for floats, zeros otherwise).
            Keys come from ``jv.random``, so a fixed seed gives the same variables.
        trainable: As for ``jv.Variable``.

    Returns:
        The variable, whose ``.name`` is the full name.

    Raises:
        ValueError: creating an existing name without reuse, getting a missing
            name with ``reuse=True``, asking an existing variable for another
            shape or dtype, or an initializer returning another shape.
        TypeError: a shape that is not a sequence of ints (``(2.5,)``, ``("2",)``).

    Example:
        >>> import jaxvars as jv
        >>> with jv.Store():
        ...     with jv.variable_scope("conv1"):
        ...         w = jv.get_variable("weights", (5, 5, 32, 32))
        ...     with jv.variable_scope("conv1", reuse=True):
        ...         w2 = jv.get_variable("weights")
        >>> w is w2, w.name
        (True, 'conv1/weights')
    """
    name = _naming.check_name(name, "variable")
    scope = _current.get()
    full = f"{scope.name}/{name}" if scope.name else name
    store = active_store()
    asked_dtype = dtype if dtype is not None else scope.dtype
    with store._lock:
        existing = store._variables.get(full)
        if existing is not None:
            if scope.reuse is None:
                raise JaxvarsValueError(
                    f"Variable '{full}' already exists, disallowed. Did you mean to set "
                    "reuse=True or reuse=jv.AUTO_REUSE in variable_scope? Originally created "
                    f"at {store._origins[full]}."
                )
            _check_matches(existing, shape, asked_dtype)
            return existing
        if scope.reuse is True:
            raise JaxvarsValueError(
                f"Variable '{full}' does not exist, or was not created with get_variable(). "
                "Did you mean to set reuse=jv.AUTO_REUSE in variable_scope?"
            )
        with _trace.outside():  # concrete initial values, even inside jv.jit
            variable = _create(full, shape, asked_dtype, initializer, scope, trainable)
        store._add(full, variable, _caller())
        return variable


def adopt(full: str, variable: Variable) -> Variable:
    """Register ``variable`` (made by jaxvars itself) in the active store as ``full``."""
    store = active_store()
    with store._lock:
        if full in store._variables:
            raise JaxvarsValueError(
                f"Variable '{full}' already exists, disallowed. Originally created at "
                f"{store._origins[full]}."
            )
        store._add(full, variable, _caller())
    return variable


def _create(
    full: str, shape: Any, dtype: Any, initializer: Any, scope: VariableScope, trainable: Any
) -> Variable:
    if initializer is None:
        initializer = scope.initializer
    if dtype is None and initializer is not None and not callable(initializer):
        dtype = _dtypes.infer_dtype(_dtypes.to_array(initializer, name=full)[0])
    dtype = _dtypes.canonical_dtype(dtype if dtype is not None else np.float32, name=full)
    shape = None if shape is None else _check_shape(full, shape)
    if initializer is None:
        initializer = default_for(dtype)
    if callable(initializer):
        if shape is None:
            raise JaxvarsValueError(
                f"get_variable('{full}'): shape is required with an initializer function."
            )
        value: Any = initializer(_random.next_key(), shape, dtype)
        if tuple(np.shape(value)) != shape:
            raise JaxvarsValueError(
                f"get_variable('{full}'): the initializer returned a value of shape "
                f"{tuple(np.shape(value))}, but shape {shape} was asked for."
            )
    else:
        array, _ = _dtypes.to_array(initializer, name=full)
        if shape is not None and tuple(array.shape) != shape:
            raise JaxvarsValueError(
                f"get_variable('{full}'): the constant initializer has shape "
                f"{tuple(array.shape)} but shape {shape} was asked for."
            )
        value = initializer
    with _naming.prefix(""):  # get_variable names are absolute: no name_scope prefix
        return Variable(value, name=full, dtype=dtype, trainable=trainable)


def _check_shape(full: str, shape: Any) -> tuple[int, ...]:
    # operator.index takes ints of any kind (NumPy's too) and refuses what int()
    # would silently convert: 2.5 (truncated to 2), "2", True.
    try:
        if isinstance(shape, (str, bytes)) or any(isinstance(d, bool) for d in shape):
            raise TypeError
        checked = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise JaxvarsTypeError(
            f"get_variable('{full}'): shape must be a sequence of ints, got {shape!r}."
        ) from None
    if any(d < 0 for d in checked):
        raise JaxvarsValueError(f"get_variable('{full}'): negative dimension in shape {shape}.")
    return checked


def _check_matches(existing: Variable, shape: Any, dtype: Any) -> None:
    if shape is not None and _check_shape(existing.name, shape) != existing.shape:
        raise JaxvarsValueError(
            f"Trying to share variable '{existing.name}', but specified shape "
            f"{tuple(shape)} and found shape {existing.shape}."
        )
    if dtype is not None:
        asked = _dtypes.canonical_dtype(dtype, name=existing.name)
        if asked != existing.dtype:
            raise JaxvarsValueError(
                f"Trying to share variable '{existing.name}', but specified dtype {asked} "
                f"and found dtype {existing.dtype}."
            )


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _caller() -> str:
    """``file:line`` of the innermost frame outside jaxvars (the user's call)."""
    frame = sys._getframe(1)
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == _PACKAGE_DIR:
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


R = TypeVar("R")


def make_template(name: str, fn: Callable[..., R], **kwargs: Any) -> Callable[..., R]:
    """Wrap ``fn`` so that every call runs in one variable scope, sharing its variables.

    The first call creates the variables ``fn`` asks ``get_variable`` for; later
    calls reuse them. Two templates made with the same name in one store get
    distinct scopes (``name``, ``name_1``), numbered when the template is made.

    Args:
        name: The scope name (made unique in the active store).
        fn: The function to wrap; ``kwargs`` are bound to it.

    Returns:
        A callable with ``fn``'s signature, and a ``variable_scope`` attribute.

    Example:
        >>> import jaxvars as jv
        >>> def scale(x):
        ...     return x * jv.get_variable("w", initializer=2.0)
        >>> with jv.Store():
        ...     t = jv.make_template("scale", scale)
        ...     float(t(1.0)), float(t(3.0)), t.variable_scope.name
        (2.0, 6.0, 'scale')
    """
    name = _naming.check_name(name, "template")
    parent = _current.get().name
    full = active_store()._unique_name(f"{parent}/{name}" if parent else name)
    scope = VariableScope(full)
    bound = functools.partial(fn, **kwargs) if kwargs else fn
    created = False

    @functools.wraps(fn)
    def template(*args: Any, **call_kwargs: Any) -> R:
        nonlocal created
        with variable_scope(scope, reuse=True if created else None):
            result = bound(*args, **call_kwargs)
        created = True
        return result

    template.variable_scope = scope  # type: ignore[attr-defined]  # documented attribute
    return template
