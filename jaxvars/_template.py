"""make_template: a function whose calls share one variable scope, as TF1's templates."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

from . import _naming, _trace
from ._errors import JaxvarsValueError
from ._scope import VariableScope, _join, get_variable_scope, variable_scope
from ._store import active_store
from ._variable import Variable

P = ParamSpec("P")
R = TypeVar("R")

CREATED_LATER = (
    "Trainable variable created when calling a template after the first time, perhaps you "
    "used jv.Variable when you meant jv.get_variable: {names}. A template's variables are "
    "made by its first call; create them with jv.get_variable, which later calls reuse."
)


class Template(Generic[P, R]):
    """A function wrapped by ``jv.make_template``: every call runs in one variable
    scope; the first creates the variables, later calls reuse them. Its
    attributes are TF's: ``variable_scope``, ``variable_scope_name``, ``name``,
    ``variables``, ``trainable_variables``, ``non_trainable_variables``.

    Example:
        >>> import jaxvars as jv
        >>> with jv.Store():
        ...     t = jv.make_template("shift", lambda x: x + jv.get_variable("b", initializer=1.0))
        ...     float(t(1.0)), isinstance(t, jv.Template), t.name
        (2.0, True, 'shift')
    """

    def __init__(self, name: str, fn: Callable[..., R], kwargs: dict[str, Any]) -> None:
        name = _naming.check_name(name, "template")
        full = active_store()._unique_name(_join(get_variable_scope().name, name))
        self.variable_scope = VariableScope(full)
        self._fn = functools.partial(fn, **kwargs) if kwargs else fn
        self._called = False  # a first call has returned
        self._variables: list[Variable] = []
        functools.update_wrapper(self, fn)

    @property
    def name(self) -> str:
        """The template's scope name, without its enclosing scopes."""
        return self.variable_scope.name.rsplit("/", 1)[-1]

    @property
    def variable_scope_name(self) -> str:
        """The full name of the template's variable scope (``"tower"``, ``"tower_1"``)."""
        return self.variable_scope.name

    @property
    def variables(self) -> list[Variable]:
        """The variables its calls created, in creation order."""
        return list(self._variables)

    @property
    def trainable_variables(self) -> list[Variable]:
        """Its variables whose ``trainable`` is not False."""
        return [v for v in self._variables if v.trainable is not False]

    @property
    def non_trainable_variables(self) -> list[Variable]:
        """Its variables with ``trainable=False``."""
        return [v for v in self._variables if v.trainable is False]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        with (
            _trace.collecting_creations() as made,
            variable_scope(self.variable_scope, reuse=self._called),
        ):
            result = self._fn(*args, **kwargs)
        if self._called:
            # TF's rule: a later call may make non-trainable variables only.
            late = [v.name for v in made if v.trainable is not False]
            if late:
                raise JaxvarsValueError(CREATED_LATER.format(names=", ".join(late)))
        known = {id(v) for v in self._variables}
        self._variables += [v for v in made if id(v) not in known]
        self._called = True
        return result

    def __repr__(self) -> str:
        return f"<jaxvars.Template '{self.variable_scope_name}' ({len(self._variables)} variables)>"


def make_template(name: str, fn: Callable[P, R], **kwargs: Any) -> Template[P, R]:
    """Wrap ``fn`` so that every call runs in one variable scope, sharing its variables.

    The first call creates the variables ``fn`` asks ``get_variable`` for; later
    calls reuse them. Scopes ``fn`` opens with ``default_name`` get the same
    names on every call (``dense``, ``dense_1``), so layers that name themselves
    share too. Two templates made with the same name in one store get distinct
    scopes (``name``, ``name_1``), numbered when the template is made; a name
    a scope was opened with (by hand, ``variable_scope("name_1")``) is skipped.
    As in TF, a later call that creates a trainable variable (a ``jv.Variable``
    where ``jv.get_variable`` was meant) raises ``ValueError``.

    Args:
        name: The scope name (made unique in the active store).
        fn: The function to wrap; ``kwargs`` are bound to it.

    Returns:
        A ``Template``: callable with ``fn``'s signature, with TF's attributes
        ``variable_scope``, ``variable_scope_name``, ``variables``,
        ``trainable_variables`` and ``non_trainable_variables``.

    Example:
        >>> import jaxvars as jv
        >>> def scale(x):
        ...     with jv.variable_scope(None, default_name="layer"):
        ...         return x * jv.get_variable("w", initializer=2.0)
        >>> with jv.Store() as store:
        ...     t = jv.make_template("scale", scale)
        ...     float(t(1.0)), float(t(3.0)), t.variable_scope_name, list(store)
        (2.0, 6.0, 'scale', ['scale/layer/w'])
        >>> t.variable_scope_name, [v.name for v in t.trainable_variables]
        ('scale', ['scale/layer/w'])
    """
    return Template(name, fn, kwargs)
