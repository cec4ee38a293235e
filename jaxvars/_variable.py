"""The Variable: a mutable cell around an immutable JAX array."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any, Literal, overload

import jax
import numpy as np
from jax.core import Tracer
from jax.sharding import Sharding

from . import _dtypes, _initial, _naming, _placement, _store, _trace
from ._errors import (
    CONCRETE_ASSIGN,
    SHAPE_MISMATCH,
    TRACER_ASSIGN,
    JaxvarsTypeError,
    JaxvarsValueError,
    boundary,
)
from ._explain import public, with_path
from ._jax_private import ArrayImpl, register_canonicalize_value_handler
from ._operators import ArrayOperators, unwrap
from ._placement import Device
from ._sparse import SparseUpdates

_current_frame = _trace.current.get
_LAST = _trace.LAST
_LOCK = _trace.STATE_LOCK
_concrete = _trace.concrete


class Variable(ArrayOperators, SparseUpdates):
    """A named, mutable cell holding one JAX array, like ``tf.Variable``.

    The array inside never changes; ``assign`` and friends rebind the cell to a
    new array of the same shape and dtype, and so do the in-place operators
    (``v += d`` is ``v.assign_add(d)``). In expressions a Variable behaves like
    its current value, and every expression returns a new array.

    Args:
        initial_value: A Python number, nested list, NumPy or JAX array, another
            Variable (its current value is copied), or a zero-argument callable
            returning one of those.
        name: A string; need not be unique. Defaults to ``"Variable"``. Enclosing
            ``variable_scope``/``name_scope`` names prefix it (``"scope/name"``).
        trainable: A bool, or a boolean array of the variable's shape masking
            which elements are trainable.
        dtype: Cast the initial value to this dtype (``same_kind`` rule);
            inferred like ``jnp.asarray`` when None.
        device: A ``jax.Device`` or a string such as ``"cpu:0"``; commits the
            variable there. Without it (or ``sharding``, ``jv.device``,
            sharding rules), a committed initial value keeps its placement
            and an uncommitted one stays uncommitted.
        sharding: A ``jax.sharding.Sharding``; commits the variable over its devices.
        regularizer: A function of the value returning a scalar loss, summed by
            ``jv.regularization_loss()``.
        constraint: A function of the value returning a value of the same
            shape: a projection ``Optimizer.apply_gradients`` applies after
            each update (never a plain ``assign``).
        collections: Names of the active store's collections the variable
            joins (held weakly). Default: ``GraphKeys.GLOBAL_VARIABLES``, and
            ``TRAINABLE_VARIABLES`` when trainable.

    Raises:
        TypeError: a non-numeric initial value, or a dtype the value cannot be cast
            to; a regularizer or constraint that is not callable; collections
            that are not a list of names.
        ValueError: a ragged list, a bad trainable mask, both device and sharding.

    Example:
        >>> import jaxvars as jv
        >>> v = jv.Variable([1.0, 2.0], name="v")
        >>> v.assign_add(1).numpy()
        array([2., 3.], dtype=float32)
        >>> (v * 2).tolist()
        [4.0, 6.0]
        >>> v += 1
        >>> v.numpy()
        array([3., 4.], dtype=float32)
    """

    __slots__ = (
        "_array",
        "_name",
        "_trainable",
        "_sharding",
        "_regularizer",
        "_constraint",
        "_held_by",
        "__weakref__",
    )
    # NumPy defers to our reflected operators instead of converting us.
    __array_priority__ = 100

    # The concrete value (a ShapeDtypeStruct while abstract); read it through
    # _value, which sees traces.
    _array: Any
    _name: str
    _trainable: bool | jax.Array
    _sharding: Sharding | None
    _regularizer: Callable[[jax.Array], Any] | None
    _constraint: Callable[[jax.Array], Any] | None
    _held_by: Any  # (weak reference to a Module, attribute path), set by the Module

    @boundary
    def __init__(
        self,
        initial_value: Any,
        *,
        name: str | None = None,
        trainable: Any = True,
        dtype: Any = None,
        device: Any = None,
        sharding: Sharding | None = None,
        regularizer: Callable[[jax.Array], Any] | None = None,
        constraint: Callable[[jax.Array], Any] | None = None,
        collections: Iterable[str] | None = None,
    ) -> None:
        name = _naming.qualified(
            _naming.check_name("Variable" if name is None else name, "variable")
        )
        self._name = name
        self._held_by = None
        self._regularizer = _initial.checked_function(regularizer, "regularizer", name)
        self._constraint = _initial.checked_function(constraint, "constraint", name)
        keys = _initial.collection_keys(collections, trainable is not False, name)
        self._sharding = _placement.resolve_sharding(device, sharding)
        if self._sharding is None:
            self._sharding = _placement.default_sharding(name)  # jv.device, sharding rules
        if isinstance(initial_value, Variable) and _current_frame() is not None:
            # Read where the new variable is made: inside jv.jit, the value the step
            # has computed so far (the creating trace computes it, see _initial).
            seen = initial_value._value
            initial_value = seen if isinstance(seen, Tracer) else initial_value
        with _trace.outside():  # initial values are concrete, even inside jv.jit
            if callable(initial_value) and not isinstance(initial_value, Variable):
                sharding = self._sharding
                if sharding and len(sharding.device_set) > 1 and not _trace.abstract.get():
                    # Imported here: it builds on the lifting helper, which needs Variable.
                    from ._sharded_init import compute_sharded

                    initial_value = compute_sharded(initial_value, sharding, name)
                else:
                    initial_value = initial_value()
            if _trace.abstract.get() or isinstance(initial_value, jax.ShapeDtypeStruct):
                # Inside jv.eval_shape, or from a ShapeDtypeStruct: a shape, a dtype, no value.
                self._array = _initial.abstract_array(initial_value, name, dtype, self._sharding)
            else:
                self._array = _initial.initial_array(
                    initial_value, name, dtype, self._sharding, owner=self
                )
        _initial.adopt_committed(self)
        # Not the setter: a new variable is in no compiled code, so nothing retraces.
        self._trainable = _initial.checked_trainable(trainable, self.shape, self._name, self)
        _placement.log_creation(name, self._array)
        _trace.note_created(self)
        store = _store.active_store()
        store._join(self, keys if regularizer is None else (*keys, _store.REGULARIZED))

    # -- reading -----------------------------------------------------------------

    @property
    def _value(self) -> jax.Array:
        # Every read goes through here: inside jv.jit/grad/fori_loop the frame
        # supplies the traced value.
        frame = _current_frame()
        if frame is None:
            return _concrete(self)
        return frame.read(self)

    @property
    def is_abstract(self) -> bool:
        """True for a variable made inside ``jv.eval_shape``: it has no value yet.

        Assigning it (``jv.restore`` does) gives it one.
        """
        return isinstance(self._array, jax.ShapeDtypeStruct)

    def _abstract_error(self) -> JaxvarsValueError:
        return with_path(
            self,
            JaxvarsValueError(
                f"Variable '{self._name}' is abstract: it has a shape {self.shape} and dtype "
                f"{self.dtype} but no value to read or compute with (it was made inside "
                "jv.eval_shape, or by a jv.jit call that raised before computing its first "
                "value). Assign it a value first (v.assign(...), or jv.restore from a "
                "checkpoint), or create it outside jv.eval_shape."
            ),
        )

    @property
    def value(self) -> jax.Array:
        """The current value, an immutable ``jax.Array``."""
        return self._value

    def read_value(self) -> jax.Array:
        """The current value (same as ``.value``), as ``tf.Variable.read_value``."""
        return self._value

    def numpy(self) -> np.ndarray:
        """A writable host NumPy copy of the current value."""
        return np.array(self._value)

    @property
    def name(self) -> str:
        """The full name: the given name prefixed by enclosing scope names."""
        return self._name

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape, a tuple of int; it never changes."""
        return tuple(self._array.shape)

    @property
    def dtype(self) -> np.dtype:
        """The NumPy dtype; it never changes."""
        return self._array.dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return self._array.ndim

    @property
    def size(self) -> int:
        """Number of elements."""
        return self._array.size

    @property
    def device(self) -> Device | None:
        """The ``jax.Device`` holding the value, or None when sharded over several
        (or, for an abstract variable, not placed)."""
        if self.is_abstract:
            sharding = self._sharding
            devices = sharding.device_set if sharding is not None else set()
        else:
            devices = self._array.devices()
        return next(iter(devices)) if len(devices) == 1 else None

    @property
    def sharding(self) -> Sharding:
        """The value's ``jax.sharding.Sharding``."""
        return self._array.sharding

    @property
    def regularizer(self) -> Callable[[jax.Array], Any] | None:
        """The regularizer given at creation (summed by ``jv.regularization_loss``), or None."""
        return self._regularizer

    @property
    def constraint(self) -> Callable[[jax.Array], Any] | None:
        """The projection optimisers apply after each update, or None."""
        return self._constraint

    @property
    def trainable(self) -> bool | jax.Array:
        """True/False, or the boolean mask of trainable elements that was set."""
        return self._trainable

    @trainable.setter
    @public
    def trainable(self, trainable: Any) -> None:
        old = self._trainable
        new = self._trainable = _initial.checked_trainable(trainable, self.shape, self._name)
        if old is not new and _trace.watched(self):  # bools are singletons: equal keeps code
            # Gradients compiled with the old setting are stale.
            _trace.changed(self, f"variable '{self._name}' trainable changed: {old} -> {new}")

    # -- assigning ---------------------------------------------------------------

    @overload
    def assign(self, value: Any, read_value: Literal[True] = True) -> Variable: ...
    @overload
    def assign(self, value: Any, read_value: Literal[False]) -> None: ...
    @public
    def assign(self, value: Any, read_value: bool = True) -> Variable | None:
        """Rebind to ``value`` (same shape, cast to this dtype).

        Returns the variable, or None with ``read_value=False`` (as in TF).

        Raises:
            ValueError: ``value`` has another shape.
            TypeError: ``value``'s dtype cannot be cast ``same_kind`` to this one.
        """
        array, weak = _dtypes.to_array(unwrap(value), name=self._name)
        # Inside a transform, the shape one lane or iteration sees (a slice of
        # a variable split by jv.vmap or jv.scan).
        frame = _current_frame()
        shape = self.shape if frame is None else tuple(frame.read(self).shape)
        if tuple(array.shape) != shape:
            raise self._shape_error("assign", array.shape, shape)
        new = _dtypes.cast(array, weak, self.dtype, name=self._name, op="assign")
        self._write(new)
        return self if read_value else None

    @overload
    def assign_add(self, delta: Any, read_value: Literal[True] = True) -> Variable: ...
    @overload
    def assign_add(self, delta: Any, read_value: Literal[False]) -> None: ...
    @public
    def assign_add(self, delta: Any, read_value: bool = True) -> Variable | None:
        """Rebind to ``value + delta``; ``delta`` may broadcast.

        Returns the variable, or None with ``read_value=False``.
        """
        self._update(operator.add, delta, "assign_add")
        return self if read_value else None

    @overload
    def assign_sub(self, delta: Any, read_value: Literal[True] = True) -> Variable: ...
    @overload
    def assign_sub(self, delta: Any, read_value: Literal[False]) -> None: ...
    @public
    def assign_sub(self, delta: Any, read_value: bool = True) -> Variable | None:
        """Rebind to ``value - delta``; ``delta`` may broadcast.

        Returns the variable, or None with ``read_value=False``.
        """
        self._update(operator.sub, delta, "assign_sub")
        return self if read_value else None

    @public
    def __setitem__(self, index: Any, value: Any) -> None:
        """``v[index] = value`` rebinds with ``value.at[index].set(x)``, same rules as assign."""
        array, weak = _dtypes.to_array(unwrap(value), name=self._name)
        part = self._aligned(_dtypes.cast(array, weak, self.dtype, name=self._name, op="assign"))
        with _LOCK:
            try:
                new = self._value.at[index].set(part)
            except (TypeError, ValueError, IndexError) as e:
                raise JaxvarsValueError(
                    f"Cannot assign to variable '{self._name}'[{index!r}] (shape {self.shape}) "
                    f"a value of shape {tuple(part.shape)}: {e}"
                ) from None
            self._write(new)

    def _update(self, op: Callable[[Any, Any], Any], delta: Any, what: str) -> Variable:
        # The hot path of eager training loops: exact type checks (ArrayImpl, not
        # isinstance(x, jax.Array): see _jax_private) and one aval read keep it
        # within a few hundred nanoseconds of the raw JAX operation.
        if type(delta) is not ArrayImpl:
            delta = unwrap(delta)
            if not isinstance(delta, jax.Array):
                # Python numbers take the variable's dtype (their kind permitting);
                # NumPy arrays keep theirs, so promotion works as for JAX arrays.
                array, weak = _dtypes.to_array(delta, name=self._name)
                dtype = self.dtype if weak else _dtypes.infer_dtype(array)
                delta = _dtypes.cast(array, weak, dtype, name=self._name, op=what)
        if self._sharding is not None:
            delta = self._aligned(delta)
        with _LOCK:
            frame = _current_frame()
            old = self._array if frame is None else frame.read(self)
            if frame is None and type(old) is not ArrayImpl:
                raise self._abstract_error()
            before = old.aval
            if delta.shape != before.shape and not _dtypes.broadcasts_to(delta.shape, before.shape):
                raise self._shape_error(what, delta.shape, tuple(before.shape))
            new = op(old, delta)
            after = new.aval
            if after.dtype != before.dtype or after.weak_type:
                new = _dtypes.cast(new, False, before.dtype, name=self._name, op=what)
            if (
                frame is None
                and type(new) is ArrayImpl
                and self._sharding is None
                and not new.committed
            ):
                self._array = new
                _LAST[0] = None
            else:
                self._write(new)
        return self

    def _write(self, new: jax.Array) -> None:
        """Store ``new`` (already of the right shape and dtype), or hand it to the frame."""
        frame = _current_frame()
        if frame is not None:
            frame.write(self, new)
            return
        if type(new) is not ArrayImpl and isinstance(new, Tracer):
            raise JaxvarsTypeError(TRACER_ASSIGN.format(op="assign", name=self._name))
        if not _trace.at_top_level():
            # A concrete array assigned inside a raw jax.jit body: it would be
            # assigned once, while tracing, and never on later calls.
            raise JaxvarsTypeError(CONCRETE_ASSIGN.format(op="assign", name=self._name))
        if self._sharding is not None:
            new = _placement.place(new, self._sharding, self._name)
        elif new.committed:
            new = _placement.uncommitted(new)
        with _LOCK:
            self._array = new
            _LAST[0] = None

    def _aligned(self, operand: Any) -> Any:
        """``operand`` moved to this variable's devices if it is committed elsewhere.

        An assignment takes the variable's placement, wherever its value lived;
        for ``assign_add`` and ``v[i] = x`` the operand must first meet the value.
        """
        sharding = self._sharding
        if (
            sharding is None
            or type(operand) is not ArrayImpl
            or not operand.committed
            or operand.sharding == sharding
        ):
            return operand
        if operand.shape != self.shape:  # a broadcast operand: a copy on each device
            sharding = _placement.replicated_on(sharding)
        return jax.device_put(operand, sharding)

    def _shape_error(
        self, op: str, value_shape: tuple[int, ...], shape: tuple[int, ...] | None = None
    ) -> JaxvarsValueError:
        return JaxvarsValueError(
            SHAPE_MISMATCH.format(
                op=op,
                name=self._name,
                shape=self.shape if shape is None else shape,
                value_shape=tuple(value_shape),
            )
        )

    # -- Python protocol ---------------------------------------------------------

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        """For treescope (``pip install jaxvars[treescope]``): see ``_treescope``."""
        from . import _treescope

        return _treescope.variable(self, path, subtree_renderer)

    def __repr__(self) -> str:
        if isinstance(self._trainable, bool):
            trainable = str(self._trainable)
        else:
            trainable = f"mask({int(self._trainable.sum())} of {self._trainable.size})"
        if self.is_abstract:
            values = "<abstract>"
        else:
            try:
                values = np.array2string(np.asarray(self._value), separator=", ")
            except Exception:  # a tracer (inside jv.jit) has no values to show
                values = repr(self._value)
        return (
            f"<jaxvars.Variable '{self._name}' shape={self.shape} dtype={self.dtype} "
            f"trainable={trainable} {_placement.describe_array(self._array)} value={values}>"
        )

    def _repr_html_(self) -> str:
        # Imported here: the display module describes variables, so it needs this one.
        from ._display import variable_html

        return variable_html(self)

    def __copy__(self) -> Variable:
        return Variable(
            self,
            name=self._name,
            trainable=self._trainable,
            sharding=self._sharding,
            regularizer=self._regularizer,
            constraint=self._constraint,
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> Variable:
        return self.__copy__()

    def __getattr__(self, attr: str) -> Any:
        # Array methods and properties (reshape, sum, T, astype, at, ...) read the
        # current value; private and dunder names are not forwarded.
        if attr.startswith("_"):
            raise AttributeError(attr)
        try:
            return getattr(self._value, attr)
        except AttributeError:
            raise AttributeError(
                f"'Variable' object (and its jax.Array value) has no attribute '{attr}'"
            ) from None


def _flatten(v: Variable) -> tuple[tuple[jax.Array], None]:
    return (v._value,), None


def _unflatten(_: None, children: tuple[Any, ...]) -> Any:
    # Rebuilding gives the plain value (a tracer inside a transform): JAX rebuilds
    # pytrees inside its own transforms, where a Variable could neither reach the
    # original cell nor enter lax primitives. No static data is kept, so
    # compiled-code caches never hold a variable alive.
    return children[0]


def _flatten_with_keys(v: Variable) -> tuple[tuple[tuple[Any, jax.Array]], None]:
    return ((_VALUE_KEY, v._value),), None


_VALUE_KEY = jax.tree_util.GetAttrKey("value")

# A pytree with the value as its only leaf: this is how jitted jnp and jax.nn
# functions accept variables on JAX 0.10, where __jax_array__ alone is refused.
jax.tree_util.register_pytree_with_keys(
    Variable,
    _flatten_with_keys,
    _unflatten,  # pyright: ignore[reportArgumentType]  # rebuilds as the value, on purpose
    _flatten,
)

# Primitives bound directly (jax.lax.conv_general_dilated(x, v), jax.lax.add(v, 1))
# canonicalise each operand by type and refuse __jax_array__; this handler hands
# them the current value. It is a JAX internal (see _jax_private), which pyproject
# pins (jax<0.11) and tests/test_variable.py checks.
register_canonicalize_value_handler(Variable, lambda v: v._value)
