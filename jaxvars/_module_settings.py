"""Settings a Module applies to everything below it: freezing, train and eval modes."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ._errors import JaxvarsTypeError

if TYPE_CHECKING:
    from ._module import Module
    from ._variable import Variable

# The setting each variable had before a Module froze it (True, a mask, or False
# for statistics that never train), by id; kept until a Module unfreezes it.
_before_freeze: dict[int, tuple[weakref.ref[Variable], bool | Any]] = {}


def trainable_of(module: Module) -> bool | Literal["mixed"]:
    """True if every variable below trains in full, False if none does, else "mixed"
    (a frozen module with no variable yet: False)."""
    settings = [v.trainable for v in module.variables]
    if not settings:
        return not _frozen(module)
    if all(s is True for s in settings):
        return True
    if all(s is False for s in settings):
        return False
    return "mixed"


def set_trainable(module: Module, trainable: Any) -> None:
    """Freeze (False) every variable below ``module``, or give back (True) the setting
    each had before a Module froze it."""
    if not isinstance(trainable, (bool, np.bool_)):
        raise JaxvarsTypeError(
            f"Module '{module.name}': trainable is set to True or False (got "
            f"{type(trainable).__name__}); give a variable a mask with variable.trainable = mask."
        )
    # Remembered, so that variables the module creates later (its build) start frozen.
    object.__setattr__(module, "_module_frozen", not trainable)
    for each in module.submodules:
        each.__dict__.pop("_module_frozen", None)  # the outer setting rules below it
    for variable in module.variables:
        if not trainable:
            freeze(variable)
            continue
        remembered = _before_freeze.pop(id(variable), None)
        if remembered is None or remembered[0]() is not variable:
            continue  # never frozen by a Module: its own setting stays
        if variable.trainable is False:  # one set since the freeze keeps what was set
            variable.trainable = remembered[1]


def freeze(variable: Variable) -> None:
    """Set ``variable.trainable = False``, remembering its setting (the one before
    the first freeze, or one set directly since)."""
    key = id(variable)
    if key not in _before_freeze or variable.trainable is not False:
        _before_freeze[key] = (weakref.ref(variable, _forget(key)), variable.trainable)
    variable.trainable = False


def attached(module: Module, value: Any) -> None:
    """Variables just given to ``module`` (in ``value``) start frozen under a frozen module."""
    if not _frozen(module):
        return
    from ._module import _state_objects, variables_of  # the module defines what it tracks

    for obj in _state_objects(value):
        for variable in variables_of(obj):
            freeze(variable)


def _frozen(module: Module) -> bool:
    """Whether ``module`` or a module holding it was frozen (trainable = False)."""
    current: Any = module
    while current is not None:
        frozen = current.__dict__.get("_module_frozen")
        if frozen is not None:
            return frozen
        held_by = current.__dict__.get("_module_held_by")
        current = held_by[0]() if held_by is not None else None
    return False


def _forget(key: int) -> Any:
    return lambda _: _before_freeze.pop(key, None)


# The attributes Module.eval() and .train() set, with their value in eval mode
# (train mode gets the opposite): Flax NNX's and Equinox's spellings.
EVAL_VALUES = {"deterministic": True, "use_running_average": True, "inference": True}


def set_mode(module: Module, evaluating: bool) -> None:
    """Set the mode attributes of ``module`` and every submodule (see ``Module.eval``)."""
    for each in (module, *module.submodules):
        for attribute, eval_value in type(each).mode_attributes.items():
            if _has_setting(each, attribute):
                setattr(each, attribute, eval_value if evaluating else not eval_value)


def _has_setting(module: Module, attribute: str) -> bool:
    if attribute in vars(module):
        return True
    declared = getattr(type(module), attribute, None)
    return declared is not None and not callable(declared)
