"""Module: a class whose attributes hold variables and submodules, tracked for you."""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
import weakref
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Literal, Self, cast

import jax
import numpy as np

from . import _deferred, _display, _losses, _module_settings, _trace
from ._errors import JaxvarsValueError
from ._scope import AUTO_REUSE, VariableScope, get_variable_scope, variable_scope
from ._store import active_store
from ._variable import Variable


class Module:
    """Base class for models that own variables, like ``tf.Module``.

    Variables and submodules assigned as attributes (also inside lists, tuples
    and dicts) are tracked. Each module has a variable scope: ``jv.Variable``
    names and ``get_variable`` variables created in its methods are prefixed
    with it, and ``get_variable`` reuses (``AUTO_REUSE``) there, so calling a
    module twice shares its variables.

    Args:
        name: The module's name; by default the class name in snake_case,
            made unique in the active store (``dense``, ``dense_1``, ...). A
            subclass's ``__init__`` may take it by keyword or by position.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxvars as jv
        >>> class Dense(jv.Module):
        ...     def __init__(self, n_in, n_out, name=None):
        ...         super().__init__(name=name)
        ...         self.w = jv.Variable(jnp.ones((n_in, n_out)), name="w")
        ...         self.b = jv.Variable(jnp.zeros(n_out), name="b")
        ...     def __call__(self, x):
        ...         return x @ self.w + self.b
        >>> with jv.Store():
        ...     layer = Dense(3, 2)
        >>> layer.name, [v.name for v in layer.variables], list(layer.named_variables())
        ('dense', ['dense/w', 'dense/b'], ['w', 'b'])
    """

    _module_name: str
    _module_scope: VariableScope
    # The attributes eval() and train() set, with their value in eval mode.
    mode_attributes: ClassVar[dict[str, bool]] = _module_settings.EVAL_VALUES

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr, value in list(vars(cls).items()):
            if inspect.isfunction(value) and (
                not attr.startswith("__") or attr in ("__init__", "__call__")
            ):
                setattr(cls, attr, _in_module_scope(value))

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        # Named before __init__ runs, so variables made in __init__ are scoped.
        module = super().__new__(cls)
        module._set_name(_name_argument(cls, args, kwargs))
        return module

    def __init__(self, name: str | None = None) -> None:
        if name is not None and name != self._module_name:
            self._set_name(name)

    def _set_name(self, name: str | None) -> None:
        parent = get_variable_scope().name
        base = name if name is not None else _snake_case(type(self).__name__)
        full = active_store()._unique_name(f"{parent}/{base}" if parent else base)
        self._module_name = name if name is not None else full.rsplit("/", 1)[-1]
        self._module_scope = VariableScope(full)

    def __setattr__(self, attr: str, value: Any) -> None:
        if isinstance(getattr(type(self), attr, None), property):  # Module.trainable
            return object.__setattr__(self, attr, value)
        old = self.__dict__.get(attr, _UNSET)
        if not _same(old, value):
            # Compiled code that used the module assumed every attribute it read
            # (a `deterministic` flag, a rate, a submodule): it is stale now.
            _changed(self, old, attr, value)
        object.__setattr__(self, attr, _tracked(value, weakref.ref(self), attr))
        if next(_state_objects(value), None) is not None:
            _module_settings.attached(self, value)  # a frozen module's new variables start frozen
            if _deferred._waiting:  # a restore waits for them
                _deferred.created_under(self)

    def __delattr__(self, attr: str) -> None:
        _changed(self, self.__dict__.get(attr), attr, "deleted")
        object.__delattr__(self, attr)

    @property
    def name(self) -> str:
        """The module's name (``dense``, ``dense_1``, or the one given)."""
        return self._module_name

    @property
    def scope_name(self) -> str:
        """The full name of the module's variable scope (``"encoder/dense"``)."""
        return self._module_scope.name

    def named_variables(self) -> dict[str, Variable]:
        """``{path: variable}``, paths being attribute paths (``"layers/0/w"``).

        Paths never contain generated names, so two identical models have the
        same paths: these are the checkpoint keys. A variable reachable by two
        paths appears once, under the first.

        Raises:
            ValueError: two different variables have the same path (an
                attribute or key containing ``/``, or keys ``1`` and ``"1"``).
        """
        pairs = _walk(self, set(), set())[0]
        named = dict(pairs)
        if len(named) != len(pairs):
            raise _collision(self, pairs)
        return named

    @property
    def variables(self) -> tuple[Variable, ...]:
        """Every tracked variable, in attribute order, submodules in place, no duplicates."""
        return tuple(self.named_variables().values())

    @property
    def trainable_variables(self) -> tuple[Variable, ...]:
        """The tracked variables whose ``trainable`` is not False (masked ones count)."""
        return tuple(v for v in self.variables if v.trainable is not False)

    @property
    def trainable(self) -> bool | Literal["mixed"]:
        """Whether the module trains (Keras's ``layer.trainable``): True if every
        variable below it is trainable in full, False if none is, else ``"mixed"``
        (masks, or statistics such as BatchNorm's running averages, count as mixed).

        Setting False freezes every variable below it: ``jv.grad`` gives them zero
        gradients, optimisers stop updating them (and drop their state at the next
        update), ``summary()`` shows them frozen. Setting True gives each variable
        back the setting it had before a Module froze it: its mask, or False for
        statistics that never train; one whose ``trainable`` was set directly since
        the freeze keeps that setting, and variables no Module froze keep theirs.

        Example:
            >>> import jaxvars as jv
            >>> class Net(jv.Module):
            ...     def __init__(self):
            ...         super().__init__()
            ...         self.w = jv.Variable([1.0, 2.0], name="w", trainable=[True, False])
            ...         self.b = jv.Variable(0.0, name="b")
            >>> net = Net()
            >>> net.trainable = False
            >>> net.trainable, net.w.trainable
            (False, False)
            >>> net.trainable = True
            >>> net.trainable, net.w.trainable.tolist(), net.b.trainable
            ('mixed', [True, False], True)
        """
        return _module_settings.trainable_of(self)

    @trainable.setter
    def trainable(self, trainable: bool) -> None:
        _module_settings.set_trainable(self, trainable)

    def add_loss(self, loss: Any) -> None:
        """Add a scalar loss during a call (Keras's ``add_loss``, activity
        regularisation); ``losses`` returns it until the next top-level call.

        Works eagerly, under ``jv.jit``, ``jv.grad`` and ``jv.remat``: the loss comes
        out as a value (inside ``jv.grad`` it is differentiable), and a cached
        ``jv.jit`` step leaves its own losses. Inside a ``jv.cond``, ``jv.switch``,
        ``jv.while_loop``, ``jv.scan`` or ``jv.vmap`` body it is an error: return
        the loss from the body instead.

        Example:
            >>> import jax.numpy as jnp, jaxvars as jv
            >>> class Act(jv.Module):
            ...     def __call__(self, x):
            ...         self.add_loss(0.1 * jnp.sum(x**2))
            ...         return x
            >>> layer = Act()
            >>> _ = jv.jit(layer)(jnp.ones(3))
            >>> len(layer.losses), round(float(layer.losses[0]), 3)
            (1, 0.3)
        """
        _losses.add_loss(self, loss)

    @property
    def losses(self) -> list[jax.Array]:
        """Keras's ``model.losses``: the losses this module and its submodules added
        in their latest top-level call, then each regularised variable's
        ``regularizer(value)``. ``jv.regularization_loss(module)`` is their sum."""
        from ._regularization import regularization_losses  # it builds on Module

        return regularization_losses(self)

    def eval(self) -> Self:
        """Evaluation mode (NNX's ``model.eval()``, Equinox's ``inference_mode``): set
        ``deterministic``, ``use_running_average`` and ``inference`` to True on this
        module and every submodule that has the attribute (or, for a class, those its
        ``mode_attributes`` names, ``{attribute: value in eval mode}``). A ``jv.jit``
        function that used the module retraces once, then runs the eval code.

        Example:
            >>> import jaxvars as jv
            >>> class Dropout(jv.Module):
            ...     def __init__(self):
            ...         super().__init__()
            ...         self.deterministic = False
            >>> layer = Dropout()
            >>> layer.eval().deterministic, layer.train().deterministic
            (True, False)
        """
        _module_settings.set_mode(self, evaluating=True)
        return self

    def train(self) -> Self:
        """Training mode: the opposite of ``eval()`` (``deterministic=False``, ...)."""
        _module_settings.set_mode(self, evaluating=False)
        return self

    @property
    def submodules(self) -> tuple[Module, ...]:
        """Every module inside this one (not itself), pre-order, depth first."""
        return tuple(module for _, module in _walk(self, set(), set())[1])

    def summary(self, print_fn: Callable[[str], Any] = print) -> None:
        """Print the module as a tree: each submodule with its class and subtotal,
        each variable with its shape, dtype, trainable setting, placement or
        sharding, parameter count and bytes; then the totals.

        Args:
            print_fn: Called with each line (``print`` by default).

        Example:
            >>> import jaxvars as jv
            >>> class Net(jv.Module):
            ...     def __init__(self):
            ...         super().__init__()
            ...         self.scale = jv.Variable([1.0, 2.0], name="scale")
            >>> with jv.Store():
            ...     Net().summary()
            Net 'net'
            path   class / shape  dtype    trainable  placement            params  bytes
            scale  (2,)           float32  True       cpu:0 (uncommitted)  2       8 B
            Total: 2 parameters, 8 B (2 trainable, 0 non-trainable)
        """
        title, rows, footer = self._summary()
        for line in _display.text_table(title, rows, footer):
            print_fn(line)

    def _summary(self) -> tuple[str, list[tuple[int, tuple[str, ...]]], str]:
        return _display.module_summary(self, *_walk(self, set(), set()))

    def stateless_call(self, state: Any, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Keras's ``stateless_call``: call the module on ``state`` (its values by path,
        as ``jv.functional(module, variables=module)`` gives them) instead of its
        variables; returns ``(output, new_state)`` and changes no variable. Code
        written for Keras's JAX backend, threading state through ``jax.jit`` and
        ``jax.grad``, ports line for line; ``jv.assign_state(new_state, module)``
        writes a state back.

        Example:
            >>> import jax, jax.numpy as jnp, jaxvars as jv
            >>> class Scale(jv.Module):
            ...     def __init__(self):
            ...         super().__init__()
            ...         self.k = jv.Variable(2.0, name="k")
            ...     def __call__(self, x):
            ...         return x * self.k
            >>> layer = Scale()
            >>> state = {"k": jnp.float32(3.0)}
            >>> out, new_state = jax.jit(layer.stateless_call)(state, jnp.ones(2))
            >>> out.tolist(), float(layer.k.value)
            ([3.0, 3.0], 2.0)
        """
        from ._functional import pure_form  # it builds on checkpoints, which need Module

        pure, _ = pure_form(cast(Callable[..., Any], self), args, kwargs, self)  # a subclass calls
        return pure(state, *args, **kwargs)

    def _repr_html_(self) -> str:
        return _display.html_table(*self._summary())

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        """For treescope (``pip install jaxvars[treescope]``): see ``_treescope``."""
        from . import _treescope

        return _treescope.module(self, path, subtree_renderer)

    def __repr__(self) -> str:
        count = sum(v.size for v in self.variables)
        return f"{type(self).__name__}(name={self.name!r}, parameters={count:,})"


def _in_module_scope(method: Callable[..., Any]) -> Callable[..., Any]:
    # A top-level call (__call__, or encode, decode, ...) starts a new collection
    # of added losses; __init__ adds none.
    calls = _no_losses if method.__name__ == "__init__" else _losses.call_of

    @functools.wraps(method)
    def scoped(self: Module, *args: Any, **kwargs: Any) -> Any:
        scope = self.__dict__.get("_module_scope")
        if scope is None:  # a method called before the module was named
            return method(self, *args, **kwargs)
        _trace.note_used(self)  # compiled code that runs it depends on its structure
        with variable_scope(scope, reuse=AUTO_REUSE), calls(self):
            return method(self, *args, **kwargs)

    return scoped


@contextlib.contextmanager
def _no_losses(module: Module) -> Iterator[None]:
    yield


def variables_of(obj: Module | Variable) -> tuple[Variable, ...]:
    """A Module's variables, or a Variable as one."""
    return obj.variables if isinstance(obj, Module) else (obj,)


def attribute_path(variable: Variable) -> str | None:
    """Where a Module holds ``variable``: ``net.bn.running_var``, or None."""
    held_by = variable._held_by
    parts: list[str] = []
    while held_by is not None:
        holder, path = held_by[0](), held_by[1]
        if holder is None:
            return None
        parts.append(path)
        held_by = holder.__dict__.get("_module_held_by")
        if held_by is None:
            parts.append(holder.name)
    return ".".join(reversed(parts)) or None


def _walk(
    module: Module, seen_variables: set[int], seen_modules: set[int]
) -> tuple[list[tuple[str, Variable]], list[tuple[str, Module]]]:
    """Pre-order, depth-first walk: (path, variable) and (path, submodule) pairs."""
    variables: list[tuple[str, Variable]] = []
    modules: list[tuple[str, Module]] = []
    seen_modules.add(id(module))

    def visit(value: Any, path: str) -> None:
        if isinstance(value, Variable):
            if id(value) not in seen_variables:
                seen_variables.add(id(value))
                variables.append((path, value))
        elif isinstance(value, Module):
            if id(value) not in seen_modules:
                modules.append((path, value))
                inner, submodules = _walk(value, seen_variables, seen_modules)
                variables.extend((f"{path}/{p}", v) for p, v in inner)
                modules.extend((f"{path}/{p}", m) for p, m in submodules)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                visit(item, f"{path}/{i}")
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, f"{path}/{key}")

    for attr, value in vars(module).items():
        if not attr.startswith("_module_"):
            visit(value, attr)
    return variables, modules


def _collision(module: Module, pairs: list[tuple[str, Variable]]) -> JaxvarsValueError:
    first: dict[str, Variable] = {}
    for path, variable in pairs:
        if path in first:
            return JaxvarsValueError(
                f"Module '{module.name}': variables '{first[path].name}' and "
                f"'{variable.name}' both have the path {path!r}, so one of them would be "
                "dropped from .variables, optimisers and checkpoints. Paths join attribute "
                "names and container keys with '/': rename the attribute or key that "
                "contains '/' or repeats another as a string (1 and '1')."
            )
        first[path] = variable
    raise AssertionError("no repeated path")  # pragma: no cover - called on a repeat only


_UNSET = object()
# Attribute values compared by value: setting a flag to the value it has keeps
# the compiled code. Anything else (arrays, objects) compares by identity.
_PLAIN = (bool, int, float, complex, str, bytes, type(None))


def _same(old: Any, new: Any) -> bool:
    if old is new:
        return True
    if type(old) is not type(new):
        return False
    if type(old) in _PLAIN:
        return old == new
    if isinstance(old, np.generic):  # a NumPy scalar (np.float32(0.5))
        return bool(old == new)
    if type(old) is tuple:
        return len(old) == len(new) and all(map(_same, old, new))
    return False


def _state_objects(value: Any) -> Iterator[Any]:
    """The Variables and Modules in ``value``, looking into containers, not modules."""
    if isinstance(value, (Variable, Module)):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _state_objects(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _state_objects(item)


def _changed(owner: Module | None, old: Any, attr: str = "", new: Any = None) -> None:
    """Evict compiled code that used ``owner`` or what ``old`` held (now replaced)."""
    why = None
    if owner is not None and _trace.watched(owner):
        what = f"attribute {type(owner).__name__}.{attr}" if attr else "a list or dict it holds"
        why = f"{what} changed: {_short(old)} -> {_short(new)}" if attr else f"{what} changed"
        _trace.changed(owner, why)
    for obj in _state_objects(old):
        _trace.changed(obj, why)


def _short(value: Any) -> str:
    return "unset" if value is _UNSET else repr(value)[:60]


class TrackedList(list):
    """A list held by a Module. Changing it in place (``layers.append(...)``)
    makes jv.jit retrace code that used the module, as reassigning would."""

    __slots__ = ("_owner", "_path")
    _owner: weakref.ref
    _path: str


class TrackedDict(dict):
    """A dict held by a Module; changing it in place makes jv.jit retrace."""

    __slots__ = ("_owner", "_path")
    _owner: weakref.ref
    _path: str


def _evict_on(cls: type, names: str) -> None:
    for name in names.split():
        base = getattr(cls.__mro__[1], name)

        def mutate(self: Any, *args: Any, _base: Any = base, **kwargs: Any) -> Any:
            owner = self._owner()
            _changed(owner, self)
            result = _base(self, *args, **kwargs)
            if owner is not None and (args or kwargs):  # what was added: see __setattr__
                _tracked((args, kwargs), self._owner, f"{self._path}[...]")  # their holder
                _module_settings.attached(owner, (args, kwargs))
                if _deferred._waiting:
                    _deferred.created_under(owner)
            return result

        mutate.__name__ = name
        setattr(cls, name, mutate)


_evict_on(
    TrackedList,
    "append extend insert pop remove clear sort reverse __setitem__ __delitem__ __iadd__ __imul__",
)
_evict_on(TrackedDict, "__setitem__ __delitem__ pop popitem clear update setdefault __ior__")
# JAX sees them exactly as it sees lists and dicts (and rebuilds plain ones).
jax.tree_util.register_pytree_node(
    TrackedList,
    lambda x: (list(x), None),
    lambda _, children: list(children),  # pyright: ignore[reportArgumentType]  # a plain list
)
jax.tree_util.register_pytree_with_keys(
    TrackedDict,
    lambda x: ([(jax.tree_util.DictKey(k), v) for k, v in x.items()], tuple(x)),
    lambda keys, children: dict(zip(keys, children, strict=True)),  # pyright: ignore[reportArgumentType]  # a plain dict
    lambda x: (list(x.values()), tuple(x)),
)


def _tracked(value: Any, owner: weakref.ref, path: str) -> Any:
    """Lists and dicts (also nested, and inside plain tuples) as tracked copies.

    Variables and modules found learn where they are held (the first holder
    wins), so errors can say ``net.bn.running_var``.
    """
    tracked: TrackedList | TrackedDict
    if type(value) is list or type(value) is TrackedList:
        tracked = TrackedList(_tracked(x, owner, f"{path}[{i}]") for i, x in enumerate(value))
    elif type(value) is dict or type(value) is TrackedDict:
        tracked = TrackedDict((k, _tracked(v, owner, f"{path}[{k!r}]")) for k, v in value.items())
    elif type(value) is tuple:
        return tuple(_tracked(x, owner, f"{path}[{i}]") for i, x in enumerate(value))
    else:
        if isinstance(value, Variable) and value._held_by is None:
            value._held_by = (owner, path)
        elif isinstance(value, Module) and "_module_held_by" not in value.__dict__:
            object.__setattr__(value, "_module_held_by", (owner, path))
        return value
    tracked._owner, tracked._path = owner, path
    return tracked


def _name_argument(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The ``name`` a subclass's ``__init__`` receives, by keyword or by position."""
    signature = _init_signature(cls)
    if signature is None or "name" not in signature.parameters:
        return kwargs.get("name")
    try:
        bound = signature.bind_partial(None, *args, **kwargs)  # None stands for self
    except TypeError:  # __init__ will report the bad call itself
        return kwargs.get("name")
    return bound.arguments.get("name")


@functools.cache
def _init_signature(cls: type) -> inspect.Signature | None:
    try:
        return inspect.signature(cls.__init__)
    except (TypeError, ValueError):  # a builtin or C-level __init__
        return None


def _snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()
