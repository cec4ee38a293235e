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
    """True if every variable below trains in full, False if none does, else "mixed"."""
    settings = [v.trainable for v in module.variables]
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
    for variable in module.variables:
        key = id(variable)
        if not trainable:
            if key not in _before_freeze:  # the first freeze keeps the original setting
                _before_freeze[key] = (weakref.ref(variable, _forget(key)), variable.trainable)
            variable.trainable = False
            continue
        remembered = _before_freeze.pop(key, None)
        if remembered is None or remembered[0]() is not variable:
            continue  # never frozen by a Module: its own setting stays
        if variable.trainable is False:  # one set since the freeze keeps what was set
            variable.trainable = remembered[1]


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
