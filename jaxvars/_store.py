"""The Store: a registry mapping full names to the variables ``get_variable`` made,
and the scope names it has given."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import sys
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from . import _dtypes, _trace
from ._errors import JaxvarsValueError, internal
from ._operators import unwrap

if TYPE_CHECKING:  # _variable imports this module: variables join their store's collections
    from ._variable import Variable

_active: contextvars.ContextVar[tuple[Store, ...]] = contextvars.ContextVar(
    "jaxvars_active_stores", default=()
)
# Every live store, held weakly (in creation order), so that get_variable's
# "does not exist" can say which other store holds the name.
_stores: weakref.WeakValueDictionary[int, Store] = weakref.WeakValueDictionary()
_serial = itertools.count()


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
            _trace.changed(self, f"variable '{variable.name}' joined a collection")

    def members(self) -> list[Variable]:
        _trace.note_used(self)  # compiled code reading it is stale once it changes
        return list(self._members.values())


class _Opened:
    """TF's count of opened variable scopes, as a tree by name component.

    TF zeroes every count under a scope when it closes: here that drops the
    node's children, and a re-entered scope copies only its own subtree, so
    entering a scope costs the size of what is under it, not of the store.
    """

    __slots__ = ("count", "children")

    def __init__(self) -> None:
        self.count = 0
        self.children: dict[str, _Opened] = {}

    def at(self, name: str) -> _Opened:
        """The node of the scope ``name``, made (unopened) if missing."""
        node = self
        for part in name.split("/") if name else ():
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Opened()
            node = child
        return node

    def is_open(self, name: str) -> bool:
        node: _Opened | None = self
        for part in name.split("/") if name else ():
            node = node.children.get(part)
            if node is None:
                return False
        return node.count > 0

    def copy_children(self) -> dict[str, _Opened]:
        copies = {}
        for part, child in self.children.items():
            copy = copies[part] = _Opened()
            copy.count, copy.children = child.count, child.copy_children()
        return copies


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
        self._origin = caller()
        # Generated names (see _opened_scope and _unique_name): the variable
        # scopes open, as TF counts them; every scope name ever opened; the
        # names given to objects (modules, templates, optimizers), never given
        # twice; where each object base's probe starts.
        self._opened = _Opened()
        self._ever_opened: set[str] = set()
        self._objects: set[str] = set()
        self._next_index: dict[str, int] = {}
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
        _stores[next(_serial)] = self

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

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        """For treescope (``pip install jaxvars[treescope]``): see ``_treescope``."""
        from . import _treescope

        return _treescope.store(self, path, subtree_renderer)

    def __repr__(self) -> str:
        from . import _display

        count = _display.plural(len(self), "variable")
        return f"<jaxvars.Store with {count}: {list(self._variables)}>"

    def _repr_html_(self) -> str:
        from . import _display  # it describes variables, which import this module

        items = self._items()
        title = f"Store with {_display.plural(len(items), 'variable')}"
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
        _trace.changed(self, "the store was cleared")  # code that looked names up here is stale
        with self._lock:
            self._variables.clear()
            self._origins.clear()
            self._opened = _Opened()
            for names in (self._ever_opened, self._objects, self._next_index):
                names.clear()
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

    def _describe(self) -> str:
        """How errors name this store: where user code made it."""
        if self is _default_store:
            return "the default store"
        return f"the Store created at {self._origin}"

    # -- generated names -----------------------------------------------------------

    @contextlib.contextmanager
    def _opened_scope(
        self, name: str, *, reentered: bool = False, generated: bool = False, replaying: Any = None
    ) -> Iterator[str]:
        """Open the variable scope ``name`` (TF's ``open_variable_scope``); yield its name.

        With ``generated``, ``name`` is a ``default_name`` base: the scope is the
        first of ``name``, ``name_1``, ``name_2``... that no open scope uses
        (TF's ``_get_unique_variable_scope``) and no object was given. Within a
        pass of a jv.jit function (``replaying``, a ``_trace.Pass``), the n-th
        one asked for is the one the function's first pass got.

        On exit the default names under it are freed, so that the next entry
        numbers its children afresh (``dense``, ``dense_1`` again, which
        ``reuse=True`` then finds): leaving a scope opened by name frees them all
        (TF's ``close_variable_subscopes``); leaving a re-entered scope object
        puts back those it found, so each call of a template or of a module's
        method names its layers as the first call did.
        """
        with self._lock:  # picked and opened in one step: two threads never share a name
            if generated:
                name = self._pick(name, replaying, self._scope_taken)[0]
            node = self._opened.at(name)
            node.count += 1
            self._ever_opened.add(name)
            found = node.copy_children() if reentered else {}
        try:
            yield name
        finally:
            with self._lock:
                node.children = found

    def _scope_taken(self, name: str) -> bool:
        return self._opened.is_open(name) or name in self._objects

    def _unique_name(self, base: str, replaying: Any = None) -> str:
        """An object's name (module, template, optimizer, average): ``base``, else
        ``base_1``, ``base_2``..., the first never given to an object nor opened as
        a scope. It is never given again (until ``clear``), wherever it was made."""
        with self._lock:
            # Names below the last one probed stay taken: start the probe there.
            start = self._next_index.get(base, 0)
            name, index = self._pick(
                base, replaying, lambda n: n in self._objects or n in self._ever_opened, start
            )
            self._objects.add(name)
            if index is not None:
                self._next_index[base] = index + 1
        return name

    def _pick(
        self, base: str, replaying: Any, taken: Callable[[str], bool], start: int = 0
    ) -> tuple[str, int | None]:
        """The name and the suffix probed (None when a pass replays its first pass's)."""
        named: list[tuple[str, str]] | None = None
        if replaying is not None:
            named = self._named_by.setdefault(replaying.names, [])
            index = replaying.scopes_named
            replaying.scopes_named += 1
            if index < len(named) and named[index][0] == base:
                return named[index][1], None
            del named[index:]  # this pass took another path from here
        index = start
        while taken(name := base if index == 0 else f"{base}_{index}"):
            index += 1
        if named is not None:
            named.append((base, name))
        return name, index


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


def caller() -> str:
    """Where the user's call is: ``file:line`` of the innermost frame outside
    jaxvars, or ``In [3], line 2`` for a notebook cell."""
    frame = sys._getframe(1)
    while frame is not None and internal(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    cell = _notebook_cell(frame.f_code.co_filename)
    if cell is not None:
        return f"In [{cell}], line {frame.f_lineno}"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def in_notebook() -> bool:
    """Whether this runs in an IPython kernel or shell (without importing IPython)."""
    ipython = sys.modules.get("IPython")
    return ipython is not None and getattr(ipython, "get_ipython", lambda: None)() is not None


def _notebook_cell(filename: str) -> int | None:
    """The execution count of the cell IPython compiled into ``filename``, if any."""
    if not in_notebook():
        return None
    shell = sys.modules["IPython"].get_ipython()
    # IPython names each cell's code by a temporary file and remembers its number.
    numbers = getattr(getattr(shell, "compile", None), "_filename_map", {})
    return numbers.get(filename)


def holders(name: str, besides: Store) -> list[Store]:
    """The live stores other than ``besides`` that hold a variable ``name``."""
    with _trace.STATE_LOCK:
        return [s for s in list(_stores.values()) if s is not besides and name in s._variables]


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
