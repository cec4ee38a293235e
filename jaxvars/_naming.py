"""The name prefix that scopes put in front of jv.Variable names (``"a/b/"``)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from ._errors import JaxvarsTypeError, JaxvarsValueError

# A context variable, so every thread (and async task) has its own prefix.
_prefix: contextvars.ContextVar[str] = contextvars.ContextVar("jaxvars_name_prefix", default="")


def qualified(name: str) -> str:
    """``name`` with the enclosing scopes' prefix."""
    return _prefix.get() + name


def current() -> str:
    """The current prefix as ``prefix`` takes it: ``"a/b"``, or ``""`` for none."""
    return _prefix.get()[:-1]


@contextlib.contextmanager
def prefix(full: str) -> Iterator[None]:
    """Make ``full`` (absolute, no trailing slash; "" for none) the current prefix."""
    token = _prefix.set(f"{full}/" if full else "")
    try:
        yield
    finally:
        _prefix.reset(token)


def check_name(name: object, what: str) -> str:
    """Names are non-empty strings; ``/`` separates scopes, so it may not start or end one."""
    if not isinstance(name, str):
        raise JaxvarsTypeError(f"A {what} name must be a str, got {type(name).__name__}.")
    if not name or name.startswith("/") or name.endswith("/"):
        raise JaxvarsValueError(
            f"Invalid {what} name {name!r}: names are non-empty and may not start or end with '/'."
        )
    return name


@contextlib.contextmanager
def name_scope(name: str) -> Iterator[str]:
    """Prefix the names of ``jv.Variable`` objects created inside with ``name/``.

    As in TensorFlow, a name scope does not prefix ``get_variable`` names, and
    a ``variable_scope`` opened inside extends it: ``jv.Variable`` names there
    are ``block/scope/...``.

    Args:
        name: The scope's name; nests under the enclosing scopes.

    Yields:
        The full prefix, e.g. ``"outer/name"``.

    Example:
        >>> import jaxvars as jv
        >>> with jv.name_scope("block"):
        ...     with jv.variable_scope("scope"):
        ...         jv.Variable(1.0, name="v").name, jv.get_variable("w", [1]).name
        ('block/scope/v', 'scope/w')
    """
    full = qualified(check_name(name, "name scope"))
    with prefix(full):
        yield full
