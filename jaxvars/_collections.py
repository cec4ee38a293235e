"""TF1 collections over the active store: get_collection, global_variables, ..."""

from __future__ import annotations

import re
from typing import Any

from ._errors import JaxvarsTypeError
from ._store import GraphKeys, active_store
from ._variable import Variable


def get_collection(key: str, scope: str | None = None) -> list[Variable]:
    """The active store's variables in collection ``key``, in the order they joined.

    Collections hold variables weakly: one stays listed while something (the
    store, for ``get_variable`` variables; a module; user code) holds it.
    Inside ``jv.jit`` the list is read when tracing, and a variable joining
    the collection later retraces the function.

    Args:
        key: The collection's name, e.g. ``jv.GraphKeys.TRAINABLE_VARIABLES``.
        scope: Keep only variables whose full name matches this regular
            expression from its start (``re.match``, as TF), e.g. ``"tower_0/"``.

    Example:
        >>> import jaxvars as jv
        >>> with jv.Store():
        ...     w = jv.get_variable("w", [2])
        ...     steps = jv.Variable(0, name="steps", collections=[jv.GraphKeys.LOCAL_VARIABLES])
        ...     names = [v.name for v in jv.get_collection(jv.GraphKeys.GLOBAL_VARIABLES)]
        ...     local = [v.name for v in jv.local_variables()]
        >>> names, local
        (['w'], ['steps'])
    """
    members = active_store()._collection(key).members()
    if scope is None:
        return members
    return [v for v in members if re.match(scope, v.name)]


def add_to_collection(key: str, variable: Variable) -> None:
    """Add ``variable`` to the active store's collection ``key`` (held weakly).

    Collections hold variables only: values computed from them belong in a
    function's results (``jv.regularization_loss()`` replaces TF's
    ``REGULARIZATION_LOSSES`` collection).

    Raises:
        TypeError: ``variable`` is not a Variable.

    Example:
        >>> import jaxvars as jv
        >>> with jv.Store():
        ...     v = jv.Variable(1.0, name="v")
        ...     jv.add_to_collection("ema_targets", v)
        ...     jv.get_collection("ema_targets") == [v]
        True
    """
    if not isinstance(variable, Variable):
        raise JaxvarsTypeError(
            f"add_to_collection({key!r}, ...): collections hold variables only, got "
            f"{type(variable).__name__}. Return computed values from your function instead "
            "(for regularization losses, use jv.regularization_loss())."
        )
    active_store()._join(variable, (key,))


def global_variables(scope: str | None = None) -> list[Variable]:
    """The active store's ``GLOBAL_VARIABLES`` collection: every variable made in it
    (``jv.Variable`` too) that did not ask for other collections.

    Example:
        >>> import jaxvars as jv
        >>> with jv.Store():
        ...     a = jv.Variable(1.0, name="a")
        ...     names = [v.name for v in jv.global_variables()]
        >>> names
        ['a']
    """
    return get_collection(GraphKeys.GLOBAL_VARIABLES, scope)


def trainable_variables(scope: str | None = None) -> list[Variable]:
    """The active store's ``TRAINABLE_VARIABLES`` collection, less variables
    frozen since (``v.trainable = False``); masked variables count as trainable.

    Example:
        >>> import jaxvars as jv
        >>> with jv.Store():
        ...     a = jv.Variable(1.0, name="a")
        ...     b = jv.Variable(2.0, name="b", trainable=False)
        ...     names = [v.name for v in jv.trainable_variables()]
        >>> names
        ['a']
    """
    members = get_collection(GraphKeys.TRAINABLE_VARIABLES, scope)
    return [v for v in members if v.trainable is not False]


def local_variables(scope: str | None = None) -> list[Variable]:
    """The active store's ``LOCAL_VARIABLES`` collection (``collections=[LOCAL_VARIABLES]``).

    Example:
        >>> import jaxvars as jv
        >>> with jv.Store():
        ...     count = jv.Variable(0, name="count", collections=[jv.GraphKeys.LOCAL_VARIABLES])
        ...     jv.local_variables() == [count], jv.global_variables()
        (True, [])
    """
    return get_collection(GraphKeys.LOCAL_VARIABLES, scope)


def as_variable_list(target: Any, expected: str) -> list[Variable]:
    """``target`` (a Variable, or an iterable of them) as a list of Variables.

    Raises:
        TypeError: something else is in it; the message starts with ``expected``
            (what the caller takes) and names the types found.
    """
    items = [target] if isinstance(target, Variable) else list(target)
    bad = sorted({type(v).__name__ for v in items if not isinstance(v, Variable)})
    if bad:
        raise JaxvarsTypeError(f"{expected}; got a collection holding {', '.join(bad)}.")
    return items
