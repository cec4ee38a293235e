"""What a new variable starts with: its value (or shape, while abstract), dtype and collections."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jax.sharding import Sharding

from . import _dtypes, _placement, _store, _trace
from ._errors import JaxvarsTypeError, JaxvarsValueError
from ._operators import ArrayOperators


def _target_dtype(array: Any, dtype: Any, name: str) -> np.dtype:
    """The dtype a new variable stores: ``dtype`` if given, else inferred from the value."""
    return (
        _dtypes.infer_dtype(array) if dtype is None else _dtypes.canonical_dtype(dtype, name=name)
    )


def checked_function(fn: Any, what: str, name: str) -> Any:
    if fn is not None and not callable(fn):
        raise JaxvarsTypeError(
            f"The {what} of variable '{name}' must be a function of its value, got "
            f"{type(fn).__name__}."
        )
    return fn


def collection_keys(collections: Any, trainable: bool, name: str) -> tuple[str, ...]:
    """The collections a new variable joins: those given, else TF's defaults."""
    if collections is None:
        keys = (_store.GraphKeys.GLOBAL_VARIABLES,)
        return (*keys, _store.GraphKeys.TRAINABLE_VARIABLES) if trainable else keys
    keys = () if isinstance(collections, str) else tuple(collections)
    if not keys and collections or not all(isinstance(k, str) for k in keys):
        raise JaxvarsTypeError(
            f"collections of variable '{name}' must be a list of collection names, got "
            f"{collections!r}."
        )
    return keys


def abstract_array(
    initial_value: Any, name: str, dtype: Any, sharding: Sharding | None
) -> jax.ShapeDtypeStruct:
    """The shape and dtype ``_initial_array`` would give, without computing anything."""
    if isinstance(initial_value, jax.ShapeDtypeStruct):
        shape, value_dtype = initial_value.shape, np.dtype(initial_value.dtype)
        target = value_dtype if dtype is None else _dtypes.canonical_dtype(dtype, name=name)
    else:
        if isinstance(initial_value, ArrayOperators):
            initial_value = initial_value._value
        array, weak = _dtypes.to_array(initial_value, name=name)
        target = _target_dtype(array, dtype, name)
        shape = _dtypes.cast(array, weak, target, name=name, op="assign").shape
    return jax.ShapeDtypeStruct(tuple(shape), target, sharding=sharding)


TRACED_INITIAL_VALUE = (
    "Variable '{name}' is created from a value traced by a JAX transform ({where}), which "
    "cannot give it a value that outlives the transform. Create it directly in the jv.jit "
    "function (there its first value is the one the step computed), or outside the "
    "transform; with get_variable, give a shape and an initializer function (such as "
    "jax.nn.initializers.zeros), which runs eagerly."
)
TRACED_MASK = (
    "trainable of variable '{name}' was set to a mask traced by a JAX transform: a mask is "
    "a fixed setting that gradients compiled later depend on, so it must be concrete. "
    "Compute the mask outside the jitted function (`w.trainable = np.abs(w.numpy()) > t`), "
    "or keep the mask in a variable and multiply by it. The setting is unchanged."
)


def initial_array(
    initial_value: Any, name: str, dtype: Any, sharding: Sharding | None, owner: Any = None
) -> Any:
    """The new variable's array. A value traced by the trace creating ``owner`` is
    deferred (see ``_trace.deferring_frame``): a placeholder now, its value after."""
    from_variable = isinstance(initial_value, ArrayOperators)
    if from_variable:
        initial_value = initial_value._value
    array, weak = _dtypes.to_array(initial_value, name=name)
    target = _target_dtype(array, dtype, name)
    value = _dtypes.cast(array, weak, target, name=name, op="assign")
    if isinstance(value, Tracer):
        _defer(owner, "_array", value, TRACED_INITIAL_VALUE.format(name=name, where="{where}"))
        # No value until the trace computes it: a read in between is an error
        # naming the variable, never a stand-in value.
        return jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding)
    # An array given by value may keep its buffer (arrays are immutable, and
    # jv.jit donates a buffer only when nothing else holds it), so a 400 MB
    # model costs 400 MB. A Variable's value is copied, as TF's contract says.
    if sharding is not None:
        return _placement.place(value, sharding, name, copy=from_variable)
    # A committed value keeps its placement, as JAX treats committed arrays (the
    # variable adopts it); an uncommitted one stays uncommitted.
    return jnp.array(value, copy=True) if from_variable else value


def checked_trainable(
    trainable: Any, shape: tuple[int, ...], name: str, owner: Any = None
) -> bool | jax.Array:
    """``trainable`` as stored: a bool, or a concrete boolean mask of ``shape``.

    A mask traced by the trace creating ``owner`` is deferred, as initial values are.
    """
    if isinstance(trainable, (bool, np.bool_)):
        return bool(trainable)
    mask_dtype = getattr(trainable, "dtype", None)
    mask_shape = np.shape(trainable) if mask_dtype is not None or _is_nested(trainable) else None
    if mask_dtype is None and mask_shape is not None:
        mask_dtype = np.asarray(trainable).dtype
    if mask_shape != shape or mask_dtype != np.bool_:
        got = (
            f"{type(trainable).__name__}"
            if mask_shape is None
            else f"an array of shape {mask_shape} and dtype {mask_dtype}"
        )
        raise JaxvarsValueError(
            f"trainable of variable '{name}' must be a bool or a boolean mask of the "
            f"variable's shape {shape}; got {got}. The setting is unchanged."
        )
    if isinstance(trainable, Tracer):  # kept as it is while its trace runs, then computed
        _defer(owner, "_trainable", trainable, TRACED_MASK.format(name=name))
    with jax.ensure_compile_time_eval():  # a concrete mask, also inside jv.eval_shape
        return jnp.asarray(trainable, dtype=bool)


def adopt_committed(variable: Any) -> None:
    """A variable with no placement of its own keeps its committed array's placement
    (one a user put on a device or a mesh), as JAX keeps a committed array's."""
    array = variable._array
    if variable._sharding is None and isinstance(array, jax.Array) and array.committed:
        variable._sharding = array.sharding


def _defer(owner: Any, attribute: str, traced: Any, error: str) -> None:
    """Leave ``owner.<attribute>`` to the trace creating it, or raise ``error``."""
    frame = _trace.deferring_frame()
    if owner is None or frame is None or frame.pending is None:
        where = "jv.eval_shape" if _trace.abstract.get() else "a transform inside jv.jit or jv.grad"
        raise JaxvarsTypeError(error.replace("{where}", where))
    frame.pending.append((owner, attribute, traced))
    if attribute == "_array":
        frame.values[owner] = traced  # what the rest of the trace reads


def settle(variable: Any, attribute: str, value: jax.Array | None) -> None:
    """Give a variable the value (or mask) its creation deferred, now computed;
    None: its trace failed (the variable stays abstract, a mask frozen)."""
    if attribute == "_array":
        if value is not None:
            variable._array = initial_array(value, variable.name, None, variable._sharding)
            adopt_committed(variable)
    else:
        variable._trainable = (
            False if value is None else checked_trainable(value, variable.shape, variable.name)
        )


def _is_nested(x: Any) -> bool:
    return isinstance(x, (list, tuple, np.ndarray, np.generic))
