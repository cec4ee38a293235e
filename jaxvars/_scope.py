"""TF1-style sharing by name: variable_scope, get_variable, make_template."""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import _named, _naming, _trace
from ._errors import JaxvarsTypeError, JaxvarsValueError, boundary
from ._store import active_store, caller, holders, in_notebook
from ._tf_keywords import refuse_tf_keywords
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
Reuse = bool | _AutoReuse
Getter = Callable[..., Any]

ALREADY_EXISTS = (
    "Variable '{name}' already exists, disallowed. Did you mean to set reuse=True or "
    "reuse=jv.AUTO_REUSE in variable_scope? Originally created at {origin}."
)
DOES_NOT_EXIST = (
    "Variable '{name}' does not exist, or was not created with get_variable(). Did you "
    "mean to set reuse=jv.AUTO_REUSE in variable_scope?"
)
IN_ANOTHER_STORE = (
    "Variable '{name}' does not exist in the active store ({active}), but it is held by "
    "{holders}. get_variable looks in the active store only: enter the store that holds "
    "it with `with store:` around this code."
)


class VariableScope:
    """An open or captured variable scope: its full name and its defaults.

    Obtained from ``with jv.variable_scope(...) as scope`` or
    ``jv.get_variable_scope()``. Entering it again (even inside another scope)
    reopens the same absolute name, and its name scope: ``jv.Variable`` names
    inside get the prefix they got when it was opened. The top scope has no
    name scope of its own: re-entering it keeps the current one.

    Attributes:
        name: The full scope name, e.g. ``"filter/conv1"`` (``""`` at the top).
        reuse: False (create only), True (get only) or ``jv.AUTO_REUSE``.
        initializer: The default initializer of ``get_variable`` in this scope.
        regularizer: The default regularizer of ``get_variable`` in this scope.
        dtype: The default dtype of ``get_variable`` in this scope.
        custom_getter: The getter ``get_variable`` calls in this scope (the
            scopes' getters composed), or None.

    Example:
        >>> import jaxvars as jv
        >>> with jv.Store():
        ...     with jv.name_scope("train"), jv.variable_scope("model") as model:
        ...         pass
        ...     with jv.variable_scope("eval"), jv.variable_scope(model) as again:
        ...         v = jv.Variable(0.0, name="v")
        ...         w = jv.get_variable("w", [1])
        >>> again.name, v.name, w.name
        ('model', 'train/model/v', 'model/w')
    """

    def __init__(
        self,
        name: str,
        reuse: Reuse = False,
        initializer: Any = None,
        dtype: Any = None,
        regularizer: Callable[[Any], Any] | None = None,
        custom_getter: Getter | None = None,
    ) -> None:
        self.name = name
        self.reuse: Reuse = reuse
        self.initializer = initializer
        self.dtype = dtype
        self.regularizer = regularizer
        self.custom_getter = custom_getter
        # The prefix of jv.Variable names inside: the name scope the scope was
        # opened in, extended by its name (``"Train/Model"`` for ``"Model"``).
        self._name_scope = name

    def reuse_variables(self) -> None:
        """Switch this scope to reuse: ``get_variable`` gets existing variables."""
        self.reuse = True

    def __repr__(self) -> str:
        return f"<jaxvars.VariableScope {self.name!r} reuse={self.reuse!r}>"


# The innermost open scope; None outside any, where the active store's top
# scope applies (per store, as TF keeps it per graph, so that
# `get_variable_scope().reuse_variables()` at the top level lasts until the
# store is cleared).
_current: contextvars.ContextVar[VariableScope | None] = contextvars.ContextVar(
    "jaxvars_variable_scope", default=None
)


def get_variable_scope() -> VariableScope:
    """The innermost open variable scope; outside any, the active store's top scope (``""``).

    Example:
        >>> import jaxvars as jv
        >>> with jv.Store():
        ...     with jv.variable_scope("tower"):
        ...         scope = jv.get_variable_scope()
        ...         w = jv.get_variable("w", [2])
        ...         scope.reuse_variables()
        ...         jv.get_variable("w") is w
        True
        >>> scope.name, scope.reuse
        ('tower', True)
    """
    scope = _current.get()
    if scope is not None:
        return scope
    store = active_store()
    with store._lock:
        if store._top_scope is None:
            store._top_scope = VariableScope("")
        return store._top_scope


@contextlib.contextmanager
def variable_scope(
    name_or_scope: str | VariableScope | None,
    default_name: str | None = None,
    values: Any = None,
    initializer: Any = None,
    regularizer: Callable[[Any], Any] | None = None,
    custom_getter: Getter | None = None,
    reuse: Reuse | None = None,
    dtype: Any = None,
    **tf_keywords: Any,
) -> Iterator[VariableScope]:
    """Open a scope that prefixes variable names and sets ``get_variable`` defaults.

    The arguments come in ``tf.compat.v1.variable_scope``'s order. As in TF,
    ``get_variable`` names follow the variable scopes only, while ``jv.Variable``
    names follow the name scope, which a variable scope extends: under
    ``jv.name_scope("Train")``, a ``jv.Variable`` in ``variable_scope("Model")``
    is ``Train/Model/Variable`` and a ``get_variable`` one is ``Model/v``.

    Args:
        name_or_scope: A name, nested under the enclosing scope
            (``"filter/conv1"``), a scope object, which keeps its absolute
            name (and name scope), or None with ``default_name``.
        default_name: With ``name_or_scope=None``: a fresh scope named
            ``default_name``, else ``default_name_1``, ``default_name_2``...:
            the first name that no sibling scope in the active store has
            taken, however it was opened (by name too), and that no template or
            module has (how TF layers name themselves). As in TF, leaving a
            scope frees the default names under it: when the parent is entered
            again (by name, or as a ``make_template`` or module call), its
            layers get the same names again (``dense``, ``dense_1``), so that
            ``reuse=True`` finds their variables. Inside ``jv.jit``, every pass
            of the function gets the names its first pass got.
        values: Accepted for TF code and ignored (TF uses it for graphs).
        initializer: Default initializer of ``get_variable`` inside (inherited).
        regularizer: Default regularizer of ``get_variable`` inside (inherited).
        custom_getter: ``getter(next_getter, name, *args, **kwargs)``, called by
            ``get_variable`` inside instead of getting or creating (inherited).
            Nested scopes' getters compose: the innermost is called first and
            its ``next_getter`` is the enclosing scope's getter.
        reuse: None (inherit; the top level creates only), True (get only) or
            ``jv.AUTO_REUSE`` (get if it exists, else create). Nested scopes
            inherit it; False means None and cannot switch off an inherited reuse.
        dtype: Default dtype of ``get_variable`` inside (inherited).

    Yields:
        The open ``VariableScope``.

    Raises:
        TypeError: TF keywords jaxvars does not take (the message says what to
            use instead), or a ``default_name`` that is not a str.
        ValueError: neither a name nor a default name, or ``reuse=True`` with
            only a default name (a fresh scope has nothing to reuse).

    Example:
        >>> import jaxvars as jv
        >>> def layer():
        ...     with jv.variable_scope(None, default_name="dense") as scope:
        ...         return scope.name, jv.get_variable("kernel", [1])
        >>> with jv.Store(), jv.name_scope("train"):
        ...     with jv.variable_scope("foo"):
        ...         v = jv.get_variable("v", [1])
        ...         plain = jv.Variable(0.0, name="plain")
        ...         (a, kernel), (b, _) = layer(), layer()
        ...     with jv.variable_scope("foo", reuse=True):
        ...         again, shared = layer()
        >>> v.name, plain.name, a, b
        ('foo/v', 'train/foo/plain', 'foo/dense', 'foo/dense_1')
        >>> again, shared is kernel
        ('foo/dense', True)
    """
    refuse_tf_keywords("variable_scope", tf_keywords)
    if default_name is not None and not isinstance(default_name, str):
        raise JaxvarsTypeError(
            f"variable_scope: default_name must be a str, got {default_name!r}. (The second "
            "argument is default_name, as in TF; pass reuse= by keyword.)"
        )
    if reuse is not None and reuse is not False and reuse is not True and reuse is not AUTO_REUSE:
        raise JaxvarsValueError(f"reuse must be None, False, True or jv.AUTO_REUSE, got {reuse!r}.")
    parent = get_variable_scope()
    store = active_store()
    reentered = isinstance(name_or_scope, VariableScope)
    if isinstance(name_or_scope, VariableScope):
        base, full = name_or_scope, name_or_scope.name
    elif name_or_scope is not None:
        base = parent
        full = _join(parent.name, _naming.check_name(name_or_scope, "variable scope"))
    elif default_name is None:
        raise JaxvarsValueError(
            "variable_scope(None) needs a default_name, e.g. "
            "variable_scope(None, default_name='dense')."
        )
    elif reuse is True:
        raise JaxvarsValueError(
            f"variable_scope(None, default_name={default_name!r}, reuse=True): a fresh "
            "scope has no variables to reuse. Name the scope to reuse it."
        )
    else:
        base, full = parent, _join(parent.name, _naming.check_name(default_name, "scope"))
    getter = base.custom_getter
    if custom_getter is not None:
        getter = custom_getter if getter is None else _compose(custom_getter, getter)
    generated = name_or_scope is None
    replaying = _trace.current_pass.get() if generated else None
    with store._opened_scope(
        full, reentered=reentered, generated=generated, replaying=replaying
    ) as full:
        scope = VariableScope(
            full,
            reuse=reuse or base.reuse or parent.reuse,
            initializer=initializer if initializer is not None else base.initializer,
            dtype=dtype if dtype is not None else base.dtype,
            regularizer=regularizer if regularizer is not None else base.regularizer,
            custom_getter=getter,
        )
        if not reentered:
            # It extends the enclosing name scope (TF's auxiliary name scope),
            # which a name_scope may have made longer than the variable scope.
            relative = full[len(parent.name) + 1 :] if parent.name else full
            scope._name_scope = _naming.qualified(relative)
        elif full:
            # Its own name scope again, as TF's `name_scope(scope.original_name_scope)`.
            scope._name_scope = base._name_scope
        else:  # the top scope has no name scope of its own: the current one stays
            scope._name_scope = _naming.current()
        token = _current.set(scope)
        try:
            with _naming.prefix(scope._name_scope):
                yield scope
        finally:
            _current.reset(token)


def _join(scope: str, name: str) -> str:
    return f"{scope}/{name}" if scope else name


def _compose(inner: Getter, outer: Getter) -> Getter:
    """``inner`` called first, with ``outer`` (bound to the real getter) as its next getter."""

    def composed(getter: Getter, *args: Any, **kwargs: Any) -> Any:
        return inner(functools.partial(outer, getter), *args, **kwargs)

    return composed


@boundary
def get_variable(
    name: str,
    shape: tuple[int, ...] | list[int] | None = None,
    dtype: Any = None,
    initializer: Any = None,
    regularizer: Callable[[Any], Any] | None = None,
    trainable: Any = True,
    collections: Iterable[str] | None = None,
    constraint: Callable[[Any], Any] | None = None,
    custom_getter: Getter | None = None,
    **tf_keywords: Any,
) -> Variable:
    """Get the variable ``scope/name`` from the active store, or create it.

    Whether it gets or creates follows the scope's ``reuse``. The full name is
    the enclosing variable scopes' names joined with ``/``; ``name_scope`` does
    not prefix it. The arguments come in ``tf.compat.v1.get_variable``'s order.

    Args:
        name: The name inside the current variable scope.
        shape: The shape; may be omitted when ``initializer`` is a constant.
        dtype: The dtype; None means the scope's dtype, else the constant
            initializer's dtype, else float32.
        initializer: One of: a function ``f(key, shape, dtype) -> array`` (as
            ``jax.nn.initializers``; keys come from ``jv.random``, so a fixed
            seed gives the same variables); a function or TF-style initializer
            object ``f(shape, dtype) -> array`` (as ``jnp.zeros``, ``jnp.ones``,
            TF's initializer objects), when its signature says so: it cannot
            take three arguments, or its first one is named ``shape`` (else it
            is called with a key); an array-like constant; or None (the scope's
            initializer, else Glorot uniform for floats, zeros otherwise).
        regularizer: A function of the value returning a scalar loss (None: the
            scope's), summed by ``jv.regularization_loss()``.
        trainable: As for ``jv.Variable``.
        collections: As for ``jv.Variable``.
        constraint: As for ``jv.Variable``: a projection optimisers apply.
        custom_getter: Called instead of the scope's getter, as
            ``custom_getter(next_getter, full_name, shape=..., dtype=..., ...)``;
            whatever it returns is returned.

    Returns:
        The variable, whose ``.name`` is the full name (or what a custom getter returned).

    Raises:
        ValueError: creating an existing name without reuse, getting a missing
            name with ``reuse=True`` (the message names the other store that
            holds it, if one does), asking an existing variable for another
            shape or dtype, or an initializer returning another shape.
        TypeError: a shape that is not a sequence of ints (``(2.5,)``, ``("2",)``);
            an initializer function of neither signature; TF keywords jaxvars
            does not take (the message says what to use instead).

    Example:
        >>> import jaxvars as jv
        >>> import jax.numpy as jnp
        >>> with jv.Store():
        ...     with jv.variable_scope("conv1"):
        ...         w = jv.get_variable("weights", (5, 5, 32, 32))
        ...         b = jv.get_variable("biases", (32,), initializer=jnp.zeros)
        ...     with jv.variable_scope("conv1", reuse=True):
        ...         w2 = jv.get_variable("weights")
        >>> w is w2, w.name, float(b.value.sum())
        (True, 'conv1/weights', 0.0)
    """
    refuse_tf_keywords("get_variable", tf_keywords)
    scope = get_variable_scope()
    full = _join(scope.name, _naming.check_name(name, "variable"))
    arguments = {
        "shape": shape,
        "dtype": dtype if dtype is not None else scope.dtype,
        "initializer": initializer if initializer is not None else scope.initializer,
        "regularizer": regularizer if regularizer is not None else scope.regularizer,
        "reuse": scope.reuse,
        "trainable": trainable,
        "collections": collections,
        "constraint": constraint,
    }
    getter = custom_getter if custom_getter is not None else scope.custom_getter
    if getter is None:
        return _true_getter(full, **arguments)
    return getter(_true_getter, full, **arguments)


def _true_getter(
    name: str,
    shape: Any = None,
    dtype: Any = None,
    initializer: Any = None,
    regularizer: Callable[[Any], Any] | None = None,
    reuse: Reuse | None = None,
    trainable: Any = True,
    collections: Iterable[str] | None = None,
    constraint: Callable[[Any], Any] | None = None,
    **tf_keywords: Any,
) -> Variable:
    """Get or create the variable ``name`` (a full name) in the active store.

    What custom getters call as their last ``next_getter``; ``reuse=None``
    means the current scope's.
    """
    refuse_tf_keywords("get_variable", tf_keywords)
    if reuse is None:
        reuse = get_variable_scope().reuse
    store = active_store()
    # Compiled code that looks variables up by name depends on where it looked
    # (the store, and in jv.jit's key the scope): see Jitted.
    _trace.note_used(store)
    made_in = _trace.current_pass.get()
    maker = None if made_in is None else made_in.owner
    with store._lock:
        existing = store._variables.get(name)
        if existing is not None:
            if not reuse and not (maker is not None and store._made_by.get(name) is maker):
                raise JaxvarsValueError(
                    ALREADY_EXISTS.format(name=name, origin=store._origins[name])
                    + (_named.NOTEBOOK_HINT if in_notebook() else "")
                )
            _named.check_matches(existing, shape, dtype)
            return existing
        if reuse is True:
            elsewhere = holders(name, besides=store)
            if not elsewhere:
                raise JaxvarsValueError(DOES_NOT_EXIST.format(name=name))
            raise JaxvarsValueError(
                IN_ANOTHER_STORE.format(
                    name=name,
                    active=store._describe(),
                    holders=" and ".join(s._describe() for s in elsewhere),
                )
            )
        with _trace.outside():  # concrete initial values, even inside jv.jit
            variable = _named.create(
                name,
                shape,
                dtype,
                initializer,
                trainable=trainable,
                regularizer=regularizer,
                collections=collections,
                constraint=constraint,
            )
        store._add(name, variable, caller())
        if maker is not None:
            store._made_by[name] = maker
        return variable
