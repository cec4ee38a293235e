"""jv.jit, jv.grad, jv.value_and_grad and jv.fori_loop: JAX transforms that let
functions read and assign variables.

Each turns a stateful function into a pure one over the variables it touches:
their values go in as arguments, their new values come out, and the
assignments are written back afterwards. Frames (``_trace``) collect the reads
and writes while JAX traces.
"""

from __future__ import annotations

import functools
import operator
import sys
import types
import weakref
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar, overload

import jax
import jax.numpy as jnp
from jax.core import Tracer

from . import _trace
from ._errors import JaxvarsError, JaxvarsTypeError
from ._module import Module
from ._variable import Variable

P = ParamSpec("P")
R = TypeVar("R")

# An argument that is a Variable or Module is passed to ``fn`` as itself (its
# identity keys the compiled code); every other leaf is traced like in jax.jit.
_OBJECT_TYPES = (Variable, Module)


_ArrayImpl = type(jnp.zeros(()))
# Module-level names for the hot path (a global lookup beats an attribute chain).
_EPOCH = _trace.EPOCH
_current_frame = _trace.current.get


def _is_object(x: Any) -> bool:
    return isinstance(x, _OBJECT_TYPES)


_NESTED = object()


def _object_id(x: Any) -> Any:
    """id() of a Variable or Module, None for an array, _NESTED for anything else."""
    if type(x) is _ArrayImpl:
        return None
    return id(x) if isinstance(x, _OBJECT_TYPES) else _NESTED


CREATED_IN_TRACE = (
    "jv.jit({fn}): variable '{name}' is created on every trace of the function, so it "
    "could never carry state from one call to the next. Create it outside the jitted "
    "function, create it with jv.get_variable (made on the first call, reused after), "
    "or create it only once (e.g. `if not hasattr(self, 'w'): self.w = jv.Variable(...)`)."
)


class _Rediscover(Exception):
    """Raised out of a trace that touched variables the compiled signature lacks."""

    def __init__(self, frame: _trace.Frame) -> None:
        super().__init__("internal: retrace with more variables")
        self.discovered = list(frame.discovered)
        self.assigned = list(frame.assigned)


class _Entry:
    """Compiled code for one call signature, and the variables it reads and assigns.

    ``run`` is a closure with everything bound in advance. It is the per-call
    hot path, and its work before the dispatch is kept to a minimum: measured
    on a 2-core machine, each microsecond of Python before the dispatch costs
    2-3 microseconds of step time, while work after it overlaps the step.
    """

    __slots__ = ("assigned", "read", "layout", "run", "guards", "__weakref__")

    def __init__(
        self,
        assigned: list[Variable],
        read: list[Variable],
        layout: Any,
        dynamic_positions: list[int],
        compile: Callable[[bool], Any],
    ) -> None:
        self.assigned = assigned
        self.read = read
        self.layout = layout
        self.guards: list[weakref.ref] = []
        compiled: dict[bool, Any] = {}
        refcount = sys.getrefcount
        token = object()  # identifies this entry's outputs in _trace.LAST
        select = _selector(dynamic_positions)
        committed = [v for v in assigned if v._sharding is not None]
        latest = _trace.LAST

        def run(source: Sequence[Any]) -> Any:
            held = latest[0]
            latest[0] = None
            if held is not None and held[0] is token:
                # Nothing touched a variable since our last call: these are the
                # arrays we wrote, and no one else was handed them.
                values, donate = held[1], True
            else:
                values = list(map(_get_array, assigned))
                # References to each buffer: the variable's slot, the list above
                # and getrefcount's argument. Any more means someone (a user's
                # `old = v.value`, another variable) still holds it: then this
                # call must not donate, or that array would be deleted under
                # its holder.
                donate = max(map(refcount, values), default=0) <= 3
            del held
            fn = compiled.get(donate)
            if fn is None:
                fn = compiled[donate] = compile(donate)
            out, new_values = fn(
                values, list(map(_get_array, read)) if read else [], select(source)
            )
            # Drop the donated arrays before rebinding: measured, releasing them
            # while the step runs is ~15 us/step cheaper than afterwards.
            del values
            for variable, value in zip(assigned, new_values, strict=True):
                variable._array = value
            moved = False
            for variable in committed:
                # XLA may choose another layout for an output than its input's
                # (a replicated bias can come back sharded): put it back where
                # the variable lives. out_shardings cannot say this, as it has
                # no public "unspecified" for the function's own outputs.
                if variable._array.sharding != variable._sharding:
                    variable._array = jax.device_put(variable._array, variable._sharding)
                    moved = True
            latest[0] = None if moved else (token, new_values)
            return out

        self.run = run


_get_array = operator.attrgetter("_array")


def _selector(positions: list[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """A C-level function picking ``positions`` out of a sequence, as a tuple."""
    if len(positions) == 1:
        (only,) = positions
        return lambda source: (source[only],)
    if not positions:
        return lambda source: ()
    return operator.itemgetter(*positions)


class Jitted:
    """The state behind a function compiled by ``jv.jit``: its cache and slow path."""

    def __init__(
        self,
        fn: Callable[..., Any],
        static_argnums: int | Sequence[int] = (),
        static_argnames: str | Sequence[str] = (),
        **jit_kwargs: Any,
    ) -> None:
        self._fn = fn
        self._name = getattr(fn, "__name__", repr(fn))
        self._static_argnums = _as_tuple(static_argnums)
        self._static_argnames = _as_tuple(static_argnames)
        for unsupported in ("donate_argnums", "donate_argnames", "in_shardings"):
            if unsupported in jit_kwargs:
                raise JaxvarsTypeError(
                    f"jv.jit does not take {unsupported}=: assigned variables are donated "
                    "automatically, and arrays keep the placement they have (use "
                    "jax.device_put, or a variable's sharding=)."
                )
        self._jit_kwargs = jit_kwargs
        self._cache: dict[Any, _Entry] = {}
        self._epoch = _EPOCH[0]

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _current_frame() is not None:
            # Already inside a jaxvars trace (nested jv.jit): the outer one compiles.
            return self._fn(*args, **kwargs)
        if self._epoch != _EPOCH[0]:
            # A trainable flag or a module's structure changed: start afresh.
            self._cache.clear()
            self._epoch = _EPOCH[0]
        statics = ()
        if self._static_argnums or self._static_argnames:
            args, kwargs, statics = self._split_statics(args, kwargs)
        objects = tuple(map(_object_id, args))
        if kwargs or statics or _NESTED in objects:
            leaves, treedef = jax.tree_util.tree_flatten((args, kwargs), is_leaf=_is_object)
            objects = tuple(id(x) if isinstance(x, _OBJECT_TYPES) else None for x in leaves)
            key: Any = (treedef, objects, statics)
        else:
            # No containers: the leaves are the arguments, keyed as in __call__.
            leaves, treedef, key = list(args), len(args), objects
        entry = self._cache.get(key)
        if entry is None:
            entry = self._discover(leaves, treedef, statics, key)
        if entry.assigned and any(isinstance(x, Tracer) for x in leaves):
            # Under a raw jax.vmap/grad/jit the new values would be that
            # transform's tracers: they must never reach a variable.
            names = ", ".join(f"'{v.name}'" for v in entry.assigned[:3])
            raise JaxvarsTypeError(
                f"jv.jit({self._name}) assigns variables ({names}) but was called inside a "
                "JAX transform that jaxvars does not control (jax.vmap, jax.grad, jax.jit). "
                "Call it outside the transform, or use jv.grad / jv.fori_loop / jv.jit instead."
            )
        try:
            return entry.run(leaves)
        except _Rediscover as more:
            return self._retry(entry, key, more, leaves)

    def _retry(self, entry: _Entry, key: Any, more: _Rediscover, source: Sequence[Any]) -> Any:
        # Rare: Python code that took another branch touched more variables.
        for _ in range(8):
            entry = self._extend(entry, key, more)
            try:
                return entry.run(source)
            except _Rediscover as again:
                more = again
        raise JaxvarsError(  # pragma: no cover - needs a function that keeps changing
            f"jv.jit({self._name}): the variables the function touches kept changing "
            "between traces; make the variables it uses depend only on its arguments' "
            "shapes and static arguments."
        )

    def _entry(self, assigned: list[Variable], read: list[Variable], layout: Any) -> _Entry:
        def compile(donate: bool) -> Any:
            options = dict(self._jit_kwargs)
            if donate:
                options["donate_argnums"] = (0,)
            return jax.jit(self._pure(assigned, read, layout), **options)

        object_refs = layout[0]
        positions = [i for i, ref in enumerate(object_refs) if ref is None]
        return _Entry(assigned, read, layout, positions, compile)

    def _layout(self, leaves: list[Any], treedef: Any, statics: Any) -> Any:
        """How to rebuild the arguments from dynamic leaves, holding objects weakly.

        Compiled code must not keep the caller's modules and variables alive
        (JAX's caches hold on to the traced function).
        """
        refs = tuple(weakref.ref(x) if isinstance(x, _OBJECT_TYPES) else None for x in leaves)
        return refs, self._rebuilder(treedef, statics)

    def _discover(self, leaves: list[Any], treedef: Any, statics: Any, key: Any) -> _Entry:
        """Trace abstractly once to learn which variables ``fn`` reads and assigns.

        Variables that ``fn`` creates (``get_variable`` on a first call) are
        created here, with concrete values, before anything is compiled.
        """
        layout = self._layout(leaves, treedef, statics)
        rebuild = layout[1]
        found: dict[str, list[Variable]] = {}

        def probe(dynamic: list[Any]) -> Any:
            rest = iter(dynamic)
            call_leaves = [x if isinstance(x, _OBJECT_TYPES) else next(rest) for x in leaves]
            with _trace.frame({}, records=True) as frame:
                args, kwargs = rebuild(call_leaves)
                out = self._fn(*args, **kwargs)
            found["assigned"] = list(frame.assigned)
            found["read"] = [v for v in frame.discovered if v not in frame.assigned]
            return out

        jax.eval_shape(probe, [x for x in leaves if not isinstance(x, _OBJECT_TYPES)])
        entry = self._entry(found["assigned"], found["read"], layout)
        self._store(key, entry, leaves)
        return entry

    def _extend(self, entry: _Entry, key: Any, more: _Rediscover) -> _Entry:
        # Dicts as ordered sets: they compare variables by identity, not with ==.
        assigned = dict.fromkeys([*entry.assigned, *more.assigned])
        touched = dict.fromkeys([*entry.read, *more.discovered])
        read = [v for v in touched if v not in assigned]
        bigger = self._entry(list(assigned), read, entry.layout)
        bigger.guards = entry.guards
        self._cache[key] = bigger
        return bigger

    def _pure(self, assigned: list[Variable], read: list[Variable], layout: Any) -> Callable:
        """The pure function of (assigned values, read values, dynamic leaves)."""
        fn = self._fn
        expected = dict.fromkeys(assigned)
        object_refs, rebuild = layout
        fn_name = self._name

        def pure(assigned_values: list[Any], read_values: list[Any], dynamic: list[Any]) -> Any:
            values = dict(zip(assigned, assigned_values, strict=True))
            values.update(zip(read, read_values, strict=True))
            rest = iter(dynamic)
            call_leaves = [next(rest) if ref is None else ref() for ref in object_refs]
            with _trace.frame(values, records=True) as frame:
                args, kwargs = rebuild(call_leaves)
                out = fn(*args, **kwargs)
            if frame.created:
                raise JaxvarsError(CREATED_IN_TRACE.format(fn=fn_name, name=frame.created[0].name))
            # A variable read or assigned that the signature lacks (Python code
            # that took another branch) means retracing with it as an input.
            if frame.discovered or any(v not in expected for v in frame.assigned):
                raise _Rediscover(frame)
            return out, [frame.values[v] for v in assigned]

        return pure

    def _store(self, key: Any, entry: _Entry, leaves: list[Any]) -> None:
        self._cache[key] = entry
        owner = weakref.ref(self)

        def evict(_: Any) -> None:
            jitted = owner()
            if jitted is not None:
                jitted._cache.pop(key, None)

        # When an argument object dies, its compiled code goes too (and its id,
        # part of the key, may be reused by a new object).
        entry.guards = [weakref.ref(x, evict) for x in leaves if isinstance(x, _OBJECT_TYPES)]

    def _rebuilder(self, treedef: Any, statics: Any) -> Callable[[list[Any]], Any]:
        def rebuild(call_leaves: list[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
            if isinstance(treedef, int):  # the flat fast path: leaves are the arguments
                args, kwargs = tuple(call_leaves), {}
            else:
                args, kwargs = jax.tree_util.tree_unflatten(treedef, call_leaves)
            if statics:
                positional, named = statics
                args = list(args)
                for index, value in positional:
                    args.insert(index, value)
                kwargs = {**kwargs, **dict(named)}
            return tuple(args), kwargs

        return rebuild

    def _split_statics(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
        n = len(args)
        argnums = sorted(i % n for i in self._static_argnums if -n <= i < n)
        positional = tuple((i, args[i]) for i in argnums)
        named = tuple(sorted((k, kwargs[k]) for k in self._static_argnames if k in kwargs))
        args = tuple(a for i, a in enumerate(args) if i not in argnums)
        kwargs = {k: v for k, v in kwargs.items() if k not in self._static_argnames}
        statics = (positional, named)
        try:
            hash(statics)
        except TypeError as e:
            raise JaxvarsTypeError(
                f"jv.jit({self._name}): static arguments must be hashable: {e}"
            ) from None
        return args, kwargs, statics


def _as_tuple(x: Any) -> tuple[Any, ...]:
    if isinstance(x, (int, str)):
        return (x,)
    return tuple(x)


@overload
def jit(fn: Callable[P, R], **jit_kwargs: Any) -> Callable[P, R]: ...
@overload
def jit(fn: None = None, **jit_kwargs: Any) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def jit(fn: Callable[..., Any] | None = None, **jit_kwargs: Any) -> Any:
    """Compile ``fn`` with ``jax.jit``, letting it read and assign any variable it reaches.

    ``fn`` may use variables from closures, the active store and scopes, and
    Module or Variable arguments (also nested in lists and dicts). After each
    call every assignment is visible, as if ``fn`` had run eagerly. New
    variable values and same-shaped inputs reuse the compiled code.

    Compiling a new signature runs ``fn`` twice (an abstract pass that finds
    the variables it touches and creates those it makes with ``get_variable``,
    then the trace); Python side effects happen at those times only, as with
    ``jax.jit``. Old buffers of assigned variables are donated, unless
    something else still holds them (an array taken from ``v.value`` before
    the call stays valid). If ``fn`` raises, no variable changes.

    Args:
        fn: The function; also usable as ``@jv.jit`` or ``@jv.jit(static_argnums=...)``.
        **jit_kwargs: ``static_argnums``, ``static_argnames`` and ``jax.jit``'s
            other keywords (``device``, ``backend``, ``out_shardings``,
            ``keep_unused``, ``compiler_options``, ...).

    Returns:
        A callable with ``fn``'s signature.

    Example:
        >>> import jaxvars as jv
        >>> counter = jv.Variable(0, name="counter")
        >>> @jv.jit
        ... def tick(step):
        ...     counter.assign_add(step)
        ...     return counter * 10
        >>> int(tick(2)), int(tick(3)), int(counter)
        (20, 50, 5)
    """
    if fn is None:
        return functools.partial(jit, **jit_kwargs)
    jitted = Jitted(fn, **jit_kwargs)
    cache, slow, retry, epoch = jitted._cache, jitted._call, jitted._retry, _EPOCH

    # A plain function, not an object with __call__: measured, calling an
    # instance costs several microseconds more per step on 2 cores. It also
    # binds as a method when it decorates one.
    @functools.wraps(fn)
    def compiled(*args: Any, **kwargs: Any) -> Any:
        # Fast path, the common call step(model, x, y) seen before. Arrays key
        # as None, anything else by id: flat entries hold only ids of live
        # Variables/Modules (evicted when they die), so another object's id
        # just misses and takes the slow path, which keys properly.
        if not kwargs and jitted._epoch == epoch[0] and _current_frame() is None:
            key = tuple([None if type(a) is _ArrayImpl else id(a) for a in args])
            entry = cache.get(key)
            if entry is not None:
                try:
                    return entry.run(args)
                except _Rediscover as more:
                    return retry(entry, key, more, args)
        return slow(args, kwargs)

    compiled._jitted = jitted  # type: ignore[attr-defined]  # for introspection and tests
    return compiled


def _wrt_variables(wrt: Any) -> tuple[list[Variable], Callable[[list[Any]], Any]]:
    """The variables of ``wrt`` and a function putting gradients in its structure."""
    if isinstance(wrt, Variable):
        return [wrt], lambda grads: grads[0]
    if isinstance(wrt, Module):
        variables = list(wrt.trainable_variables)
        return variables, tuple
    leaves, treedef = jax.tree_util.tree_flatten(wrt, is_leaf=_is_object)
    bad = [type(x).__name__ for x in leaves if not isinstance(x, Variable)]
    if bad:
        raise JaxvarsTypeError(
            "wrt must be a Variable, a Module, or a list/tuple/dict of Variables; "
            f"found {', '.join(sorted(set(bad)))} in it."
        )
    return leaves, lambda grads: jax.tree_util.tree_unflatten(treedef, grads)


def masked_gradient(variable: Variable, grad: Any) -> Any:
    """``grad`` with zeros where ``variable`` is not trainable (all of it, or its mask)."""
    trainable = variable.trainable
    if trainable is True:
        return grad
    if trainable is False:
        return jnp.zeros_like(grad)
    return jnp.where(trainable, grad, jnp.zeros_like(grad))


def _value_and_grad_impl(
    fn: Callable[..., Any], wrt: Any, has_aux: bool, args: Any, kwargs: Any
) -> tuple[Any, Any, Any]:
    variables, restructure = _wrt_variables(wrt)
    written: list[Variable] = []

    def inner(values: list[Any]) -> Any:
        with _trace.frame(dict(zip(variables, values, strict=True)), records=False) as frame:
            result = fn(*args, **kwargs)
        value, aux = result if has_aux else (result, None)
        written[:] = frame.assigned
        return value, (aux, [frame.values[v] for v in frame.assigned])

    start = [v._value for v in variables]
    (value, (aux, written_values)), grads = jax.value_and_grad(inner, has_aux=True)(start)
    # Writes made by fn (random streams, running statistics) land after the
    # gradient, so the gradient saw the variables as they were.
    for variable, new in zip(written, written_values, strict=True):
        variable.assign(new)
    grads = [masked_gradient(v, g) for v, g in zip(variables, grads, strict=True)]
    return value, aux, restructure(grads)


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
        A function returning gradients shaped like ``wrt``, or
        ``(gradients, aux)`` with ``has_aux``.

    Example:
        >>> import jaxvars as jv
        >>> w = jv.Variable([1.0, 2.0])
        >>> jv.grad(lambda: (w * w).sum(), w)()
        Array([2., 4.], dtype=float32)
    """

    @functools.wraps(fn)
    def gradient(*args: Any, **kwargs: Any) -> Any:
        _, aux, grads = _value_and_grad_impl(fn, wrt, has_aux, args, kwargs)
        return (grads, aux) if has_aux else grads

    return gradient


def value_and_grad(
    fn: Callable[..., Any], wrt: Any, *, has_aux: bool = False
) -> Callable[..., Any]:
    """Like ``jv.grad``, also returning the value: ``(value, grads)``, or
    ``((value, aux), grads)`` with ``has_aux``.

    Example:
        >>> import jaxvars as jv
        >>> w = jv.Variable(3.0)
        >>> value, g = jv.value_and_grad(lambda: w * w, w)()
        >>> float(value), float(g)
        (9.0, 6.0)
    """

    @functools.wraps(fn)
    def both(*args: Any, **kwargs: Any) -> Any:
        value, aux, grads = _value_and_grad_impl(fn, wrt, has_aux, args, kwargs)
        return ((value, aux), grads) if has_aux else (value, grads)

    return both


def fori_loop(lower: Any, upper: Any, body: Callable[[Any, Any], Any], init_val: Any = None) -> Any:
    """``jax.lax.fori_loop`` whose ``body(i, carry) -> carry`` may read and assign variables.

    Runs many steps in one compiled loop, eagerly or inside ``jv.jit``; the
    variables ``body`` assigns are carried through the loop and written back
    at the end.

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
    assigned = _loop_assigned(body, init_val)
    carried = dict.fromkeys(assigned)  # identity membership

    def step(i: Any, carry: Any) -> Any:
        value, values = carry
        with _trace.frame(dict(zip(assigned, values, strict=True)), records=True) as frame:
            value = body(i, value)
        extra = [v.name for v in frame.assigned if v not in carried]
        if extra:
            raise JaxvarsError(
                f"jv.fori_loop: the body assigned {extra} when traced but not on its "
                "first, probing run; make the variables it assigns independent of the "
                "loop index and carry."
            )
        return value, [frame.values[v] for v in assigned]

    value, values = jax.lax.fori_loop(lower, upper, step, (init_val, [v._value for v in assigned]))
    for variable, new in zip(assigned, values, strict=True):
        variable.assign(new)
    return value


def _loop_assigned(body: Callable[[Any, Any], Any], init_val: Any) -> list[Variable]:
    """The variables ``body`` assigns, found by tracing it once abstractly."""
    found: list[Variable] = []

    def probe(i: Any, carry: Any) -> Any:
        with _trace.frame({}, records=True) as frame:
            out = body(i, carry)
        found.extend(frame.assigned)
        return out

    jax.eval_shape(probe, 0, init_val)
    return found


# Compiled eager loops, per body function. Weak on both sides: a body (and the
# variables its closure holds) must stay collectable, as with jax.jit.
_eager_loops: weakref.WeakKeyDictionary[Callable[..., Any], Callable[..., Any]] = (
    weakref.WeakKeyDictionary()
)


def _eager_loop(lower: Any, upper: Any, body: Callable[[Any, Any], Any], init_val: Any) -> Any:
    """Run a loop called outside any transform by compiling it with jv.jit."""
    runner = _eager_loops.get(body) if isinstance(body, types.FunctionType) else None
    if runner is None:
        if isinstance(body, types.FunctionType):
            body_ref = weakref.ref(body)

            def run(lo: Any, hi: Any, init: Any) -> Any:
                live = body_ref()
                assert live is not None  # the runner is dropped with its body
                return fori_loop(lo, hi, live, init)

            runner = _eager_loops[body] = jit(run)
        else:  # a bound method or other callable: weak references to it die at once
            runner = jit(lambda lo, hi, init: fori_loop(lo, hi, body, init))
    return runner(lower, upper, init_val)
