"""The Store: a registry mapping full names to the variables ``get_variable`` made."""

from __future__ import annotations

import contextvars
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from . import _dtypes, _trace
from ._errors import JaxvarsValueError
from ._operators import unwrap

if TYPE_CHECKING:  # _variable imports this module: variables join their store's collections
    from ._variable import Variable

_active: contextvars.ContextVar[tuple[Store, ...]] = contextvars.ContextVar(
    "jaxvars_active_stores", default=()
)


class GraphKeys:
    """Names of the standard collections, as ``tf.GraphKeys``.

    Example:
        >>> import jaxvars as jv
        >>> jv.GraphKeys.GLOBAL_VARIABLES, jv.GraphKeys.TRAINABLE_VARIABLES
        ('variables', 'trainable_variables')
    """

    GLOBAL_VARIABLES = "variables"
    LOCAL_VARIABLES = "local_variables"
    TRAINABLE_VARIABLES = "trainable_variables"
    MODEL_VARIABLES = "model_variables"
    MOVING_AVERAGE_VARIABLES = "moving_average_variables"
    METRIC_VARIABLES = "metric_variables"
    GLOBAL_STEP = "global_step"


# Not a TF collection: the variables that have a regularizer, whatever
# collections they joined. regularization_loss() reads only this one, so
# creating other variables never retraces a step that computes it.
REGULARIZED = "jaxvars:regularized"


class Collection:
    """An ordered set of variables held weakly (ordered by when they joined).

    Weakly, because jaxvars keeps no variable alive that user code dropped; a
    store's own variables stay in it because the store holds them. Compiled
    code that read a collection depends on it: a variable joining evicts it.
    """

    __slots__ = ("_members", "__weakref__")

    def __init__(self) -> None:
        self._members: weakref.WeakValueDictionary[int, Variable] = weakref.WeakValueDictionary()

    def add(self, variable: Variable) -> None:
        if id(variable) not in self._members:
            self._members[id(variable)] = variable
            _trace.changed(self)

    def members(self) -> list[Variable]:
        _trace.note_used(self)  # compiled code reading it is stale once it changes
        return list(self._members.values())


class Store(Mapping[str, "Variable"]):
    """A registry of named variables, used like a read-only dict.

    ``get_variable`` creates and finds variables in the active store: the
    default one, or the innermost store entered with ``with store:``. A Store
    is a pytree whose leaves are its variables' values (in creation order), so
    it can be passed to ``jax`` functions; rebuilding it gives a plain
    ``{name: value}`` dict.

    Example:
        >>> import jaxvars as jv
        >>> store = jv.Store()
        >>> with store, jv.variable_scope("layer"):
        ...     w = jv.get_variable("w", initializer=[1.0, 2.0])
        >>> list(store), store["layer/w"] is w, len(store)
        (['layer/w'], True, 1)
    """

    def __init__(self) -> None:
        self._variables: dict[str, Variable] = {}
        self._origins: dict[str, str] = {}
        self._name_counts: dict[str, int] = {}
        self._collections: dict[str, Collection] = {}
        # What jv.jit functions' passes made (see _trace.Pass), their functions
        # held weakly: {variable name: function}, {function: [(base, scope name)]}.
        self._made_by: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self._named_by: weakref.WeakKeyDictionary[Any, list[tuple[str, str]]] = (
            weakref.WeakKeyDictionary()
        )
        self._top_scope: Any = None  # the store's top VariableScope, made by _scope on first use
        # The one state lock, not a lock per store: get_variable may draw a
        # random key (which takes the state lock) while it holds the store's,
        # and a jv.jit step holding the state lock may call get_variable.
        # Two locks taken in both orders could deadlock; one cannot.
        self._lock = _trace.STATE_LOCK

    # -- mapping ------------------------------------------------------------------

    def __getitem__(self, name: str) -> Variable:
        try:
            return self._variables[name]
        except KeyError:
            raise KeyError(f"No variable named {name!r} in this store.") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._variables)

    def __repr__(self) -> str:
        return f"<jaxvars.Store with {len(self)} variables: {list(self._variables)}>"

    def _repr_html_(self) -> str:
        from . import _display  # it describes variables, which import this module

        items = self._items()
        title = f"Store with {len(items)} variables"
        return _display.html_table(
            title, _display.named_rows(items), _display.totals(items.values())
        )

    # Stores are distinct registries: compare by identity, not by contents
    # (Mapping's __eq__ would compare variables, which is elementwise).
    __eq__ = object.__eq__
    __hash__ = object.__hash__  # pyright: ignore[reportAssignmentType]  # Mapping sets None

    def variables(self) -> tuple[Variable, ...]:
        """All variables, in creation order."""
        return tuple(self._items().values())

    def trainable_variables(self) -> tuple[Variable, ...]:
        """Variables whose ``trainable`` is not False (masked variables count)."""
        return tuple(v for v in self._items().values() if v.trainable is not False)

    def state(self) -> dict[str, jax.Array]:
        """A ``{name: array}`` snapshot of every variable's current value."""
        return {name: v.value for name, v in self._items().items()}

    def _items(self) -> dict[str, Variable]:
        # A copy taken under the lock: another thread may be creating variables.
        with self._lock:
            return dict(self._variables)

    def load_state(self, state: Mapping[str, Any], *, strict: bool = True) -> None:
        """Assign every variable from ``state``, after checking all of it.

        Every key, shape and dtype must match exactly; a variable missing from
        ``state`` is an error, and so (with ``strict=True``) is a key that names
        no variable. On any problem nothing changes.

        Raises:
            ValueError: listing every problem found.
        """
        variables = self._items()
        values = check_state(variables, state, strict=strict, what="load_state")
        with _trace.STATE_LOCK:  # one atomic update, as a jv.jit step is
            for name, value in values.items():
                variables[name].assign(value)

    # -- lifecycle ----------------------------------------------------------------

    def clear(self) -> None:
        """Forget every variable and every generated name (for notebook re-runs).

        Variables already handed out keep working; the store just no longer
        knows them, so ``get_variable`` creates them anew.
        """
        with self._lock:
            self._variables.clear()
            self._origins.clear()
            self._name_counts.clear()
            self._made_by.clear()
            self._named_by.clear()
            self._top_scope = None
            for collection in self._collections.values():
                _trace.changed(collection)
            self._collections.clear()

    def __enter__(self) -> Store:
        # The stack lives in a context variable (per thread), not on the store,
        # so several threads may enter the same store at once.
        _active.set((*_active.get(), self))
        return self

    def __exit__(self, *exc: object) -> None:
        _active.set(_active.get()[:-1])

    # -- used by scopes and modules -----------------------------------------------

    def _add(self, name: str, variable: Variable, origin: str) -> None:
        self._variables[name] = variable
        self._origins[name] = origin

    def _collection(self, key: str) -> Collection:
        """The collection named ``key`` (made empty on first use)."""
        with self._lock:
            collection = self._collections.get(key)
            if collection is None:
                collection = self._collections[key] = Collection()
            return collection

    def _join(self, variable: Variable, keys: Any) -> None:
        """Add ``variable`` to the collections named ``keys``."""
        with self._lock:
            for key in keys:
                self._collection(key).add(variable)

    def _mark_used(self, name: str) -> None:
        """Note that the scope ``name`` was opened, so generated names skip it."""
        with self._lock:
            self._name_counts[name] = max(self._name_counts.get(name, 0), 1)

    def _unique_name(self, base: str, replaying: Any = None) -> str:
        """``base``, then ``base_1``, ``base_2``... on later calls with the same base.

        Within a pass of a jv.jit function (``replaying``, a ``_trace.Pass``),
        the n-th name asked for is the one the function's first pass got.
        """
        named: list[tuple[str, str]] = []
        with self._lock:
            if replaying is not None:
                named = self._named_by.setdefault(replaying.owner, [])
                index = replaying.scopes_named
                replaying.scopes_named += 1
                if index < len(named) and named[index][0] == base:
                    return named[index][1]
                del named[index:]  # this pass took another path from here
            count = self._name_counts.get(base, 0)
            self._name_counts[base] = count + 1
            name = base if count == 0 else f"{base}_{count}"
            if replaying is not None:
                named.append((base, name))
        return name


def check_state(
    variables: Mapping[str, Variable], state: Mapping[str, Any], *, strict: bool, what: str
) -> dict[str, Any]:
    """Validate ``state`` against ``variables``: keys, exact shapes and dtypes.

    Returns the values to assign, keyed by name. Raises one ValueError that
    lists every problem.
    """
    values = {n: unwrap(v) for n, v in state.items()}
    found = {  # keys naming no variable are never looked into
        name: (np.shape(value), _dtype_of(value)) if name in variables else None
        for name, value in values.items()
    }
    problems = mismatches(variables, found, strict=strict, source="state")
    if problems:
        raise JaxvarsValueError(
            f"{what}: {len(problems)} problem(s), nothing was changed:\n  " + "\n  ".join(problems)
        )
    return {name: values[name] for name in variables}


def mismatches(
    variables: Mapping[str, Variable],
    found: Mapping[str, tuple[tuple[int, ...], np.dtype] | None],
    *,
    strict: bool,
    source: str,
) -> list[str]:
    """What keeps ``found`` (each key's shape and dtype in ``source``; None where
    unreadable) from being assigned to ``variables``: missing keys, unexpected
    keys (with ``strict``), and shapes or dtypes that differ."""
    problems = [f"missing key {name!r}" for name in variables if name not in found]
    if strict:
        problems += [f"unexpected key {name!r}" for name in found if name not in variables]
    for name, variable in variables.items():
        shape_dtype = found.get(name)
        if shape_dtype is None:
            continue
        shape, dtype = tuple(shape_dtype[0]), np.dtype(shape_dtype[1])
        if shape != variable.shape:
            problems.append(
                f"{name!r}: shape {shape} in the {source}, {variable.shape} in the variable"
            )
        elif dtype != variable.dtype:
            problems.append(
                f"{name!r}: dtype {dtype} in the {source}, {variable.dtype} in the variable"
            )
    return problems


def _dtype_of(value: Any) -> np.dtype:
    dtype = getattr(value, "dtype", None)
    return np.dtype(dtype) if dtype is not None else _dtypes.infer_dtype(np.asarray(value))


_default_store = Store()


def active_store() -> Store:
    """The innermost store entered with ``with store:``, else the default store."""
    stack = _active.get()
    return stack[-1] if stack else _default_store


def default_store() -> Store:
    """The active store, as ``tf.get_default_graph()``: the innermost one entered
    with ``with store:``, else the process-wide default store.

    Example:
        >>> import jaxvars as jv
        >>> store = jv.Store()
        >>> with store:
        ...     jv.default_store() is store
        True
        >>> jv.default_store() is store
        False
    """
    return active_store()


def reset_default_store() -> None:
    """Empty the process-wide default store, so re-running a notebook cell creates afresh.

    The TF1 pain this removes: re-running a cell that calls ``get_variable``
    raised "already exists". Variables already handed out keep working. As
    ``tf.reset_default_graph``, it refuses to run inside ``with store:``.

    Raises:
        ValueError: called inside a ``with store:`` block (use ``store.clear()``).

    Example:
        >>> import jaxvars as jv
        >>> jv.reset_default_store()
        >>> len(jv.default_store())
        0
    """
    if _active.get():
        raise JaxvarsValueError(
            "reset_default_store() was called inside a `with store:` block, where the "
            "default store is not the active one. Call it outside, or empty that store "
            "with store.clear()."
        )
    _default_store.clear()


def _flatten(store: Store) -> tuple[list[Variable], tuple[str, ...]]:
    items = store._items()
    return list(items.values()), tuple(items)


def _flatten_with_keys(store: Store) -> tuple[list[tuple[Any, Variable]], tuple[str, ...]]:
    items = store._items()
    return [(jax.tree_util.DictKey(k), v) for k, v in items.items()], tuple(items)


def _unflatten(names: tuple[str, ...], children: Any) -> dict[str, Any]:
    # Names (never the store) are the static data, so JAX caches keep no store alive.
    return dict(zip(names, children, strict=True))


jax.tree_util.register_pytree_with_keys(
    Store,
    _flatten_with_keys,
    _unflatten,  # pyright: ignore[reportArgumentType]  # rebuilds as a dict, on purpose
    _flatten,
)
