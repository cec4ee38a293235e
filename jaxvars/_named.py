"""Making and checking the variables a store names: get_variable's creation path."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from . import _dtypes, _naming
from ._errors import JaxvarsTypeError, JaxvarsValueError
from ._initializers import default_for, initial_value
from ._store import active_store, caller, in_notebook
from ._variable import Variable


def adopt(full: str, variable: Variable) -> Variable:
    """Register ``variable`` (made by jaxvars itself) in the active store as ``full``."""
    store = active_store()
    with store._lock:
        if full in store._variables:
            raise JaxvarsValueError(
                f"Variable '{full}' already exists, disallowed. Originally created at "
                f"{store._origins[full]}." + (NOTEBOOK_HINT if in_notebook() else "")
            )
        store._add(full, variable, caller())
    return variable


def create(full: str, shape: Any, dtype: Any, initializer: Any, **options: Any) -> Variable:
    constant = None  # a constant initializer as an array: converted once, here
    if dtype is None and initializer is not None and not callable(initializer):
        constant, _ = _dtypes.to_array(initializer, name=full)
        dtype = _dtypes.infer_dtype(constant)
    dtype = _dtypes.canonical_dtype(dtype if dtype is not None else np.float32, name=full)
    shape = None if shape is None else check_shape(full, shape)
    if initializer is None:
        initializer = default_for(dtype)
    if callable(initializer):
        if shape is None:
            raise JaxvarsValueError(
                f"get_variable('{full}'): shape is required with an initializer function."
            )
        value: Any = initial_value(initializer, full, shape, dtype)
    else:
        array = _dtypes.to_array(initializer, name=full)[0] if constant is None else constant
        if shape is not None and tuple(array.shape) != shape:
            raise JaxvarsValueError(
                f"get_variable('{full}'): the constant initializer has shape "
                f"{tuple(array.shape)} but shape {shape} was asked for."
            )
        value = initializer
    with _naming.prefix(""):  # get_variable names are absolute: no name_scope prefix
        variable = Variable(value, name=full, dtype=dtype, **options)
    if shape is not None and variable.shape != shape:  # dropped: never in the store
        raise JaxvarsValueError(
            f"get_variable('{full}'): the initializer returned a value of shape "
            f"{variable.shape}, but shape {shape} was asked for."
        )
    return variable


def check_shape(full: str, shape: Any) -> tuple[int, ...]:
    # operator.index takes ints of any kind (NumPy's too) and refuses what int()
    # would silently convert: 2.5 (truncated to 2), "2", True.
    try:
        if isinstance(shape, (str, bytes)) or any(isinstance(d, bool) for d in shape):
            raise TypeError
        checked = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise JaxvarsTypeError(
            f"get_variable('{full}'): shape must be a sequence of ints, got {shape!r}."
        ) from None
    if any(d < 0 for d in checked):
        raise JaxvarsValueError(f"get_variable('{full}'): negative dimension in shape {shape}.")
    return checked


def check_matches(existing: Variable, shape: Any, dtype: Any) -> None:
    if shape is not None and check_shape(existing.name, shape) != existing.shape:
        raise JaxvarsValueError(
            f"Trying to share variable '{existing.name}', but specified shape "
            f"{tuple(shape)} and found shape {existing.shape}."
        )
    if dtype is not None:
        asked = _dtypes.canonical_dtype(dtype, name=existing.name)
        if asked != existing.dtype:
            raise JaxvarsValueError(
                f"Trying to share variable '{existing.name}', but specified dtype {asked} "
                f"and found dtype {existing.dtype}."
            )


NOTEBOOK_HINT = (
    " In a notebook, re-running a cell that creates variables needs "
    "jv.reset_default_store() at the top of the cell (or store.clear() for your own "
    "store): the store forgets its variables and the cell creates them afresh."
)
