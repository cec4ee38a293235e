"""ExponentialMovingAverage: shadow variables that track others, as in TF."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import jax.numpy as jnp

from . import _naming
from ._collections import as_variable_list, trainable_variables
from ._errors import JaxvarsTypeError, JaxvarsValueError
from ._module import Module
from ._named import adopt
from ._store import GraphKeys, active_store
from ._variable import Variable


class ExponentialMovingAverage:
    """Keep moving averages of variables in non-trainable shadow variables.

    ``apply(variables)`` creates each variable's shadow on first use (named
    ``<variable name>/ExponentialMovingAverage`` in the active store, holding
    the variable's current value) and updates it:
    ``shadow -= (1 - decay) * (shadow - variable)``. With ``num_updates`` (a
    number or a variable, e.g. the global step) the decay used is
    ``min(decay, (1 + num_updates) / (10 + num_updates))``, as in TF. It works
    eagerly and inside ``jv.jit`` (a first jitted call creates the shadows).

    Args:
        decay: The decay, e.g. 0.999.
        num_updates: Optional step count (number or Variable) that lowers the
            decay early in training.
        name: The suffix of the shadow variables' names.

    Example:
        >>> import jaxvars as jv
        >>> with jv.Store():
        ...     w = jv.Variable(0.0, name="w")
        ...     ema = jv.ExponentialMovingAverage(decay=0.5)
        ...     ema.apply([w])             # creates the shadow, equal to w
        ...     _ = w.assign(4.0)
        ...     ema.apply([w])             # shadow: 0 - 0.5 * (0 - 4) = 2
        ...     float(ema.average(w)), ema.average(w).name
        ...     with ema.swapped([w]):
        ...         float(w)               # evaluate with the averaged weights
        ...     float(w)
        (2.0, 'w/ExponentialMovingAverage')
        2.0
        4.0
    """

    def __init__(
        self, decay: float, num_updates: Any = None, *, name: str = "ExponentialMovingAverage"
    ) -> None:
        if not 0.0 <= float(decay) <= 1.0:
            raise JaxvarsValueError(
                f"ExponentialMovingAverage: decay must be in [0, 1], got {decay}."
            )
        self._decay = float(decay)
        self._num_updates = num_updates
        self._name = _naming.check_name(name, "moving average")
        # {id(variable): (weak reference to it, its shadow)}; by id because
        # Variables compare elementwise. The shadow lives in the store.
        self._shadows: dict[int, tuple[weakref.ref, Variable]] = {}

    @property
    def name(self) -> str:
        """The suffix of the shadow variables' names."""
        return self._name

    def apply(self, var_list: Any = None) -> None:
        """Create (first call) and update the shadows of ``var_list``.

        Args:
            var_list: Variables (a list, a Variable or a Module, meaning its
                trainable variables); None means ``jv.trainable_variables()``.

        Raises:
            TypeError: a variable that is not floating point (named; nothing changed).
        """
        variables = _variables_of(trainable_variables() if var_list is None else var_list)
        for v in variables:
            if not jnp.issubdtype(v.dtype, jnp.floating):
                raise JaxvarsTypeError(
                    f"ExponentialMovingAverage.apply: variable '{v.name}' has dtype {v.dtype}; "
                    "moving averages are kept for floating-point variables only."
                )
        shadows = [self._shadow_of(v) for v in variables]
        keep = 1.0 - self._decay_now()
        for v, shadow in zip(variables, shadows, strict=True):
            shadow.assign_sub(keep * (shadow.value - v.value))

    def average(self, variable: Variable) -> Variable:
        """The shadow variable holding ``variable``'s moving average.

        Raises:
            ValueError: ``apply`` never saw ``variable``.
        """
        entry = self._shadows.get(id(variable))
        if entry is None or entry[0]() is not variable:
            raise JaxvarsValueError(
                f"ExponentialMovingAverage has no average of variable "
                f"'{getattr(variable, 'name', variable)}': call ema.apply([...]) with it first."
            )
        return entry[1]

    def average_name(self, variable: Variable) -> str:
        """The full name ``variable``'s shadow has (or will have) in the store."""
        return f"{variable.name}/{self._name}"

    @contextlib.contextmanager
    def swapped(self, target: Any = None) -> Iterator[None]:
        """Put the averages into the variables inside the block, the trained values back after.

        For evaluating with averaged weights. The trained values come back
        even if the block raises.

        Args:
            target: A Module (its variables that have averages), a Variable, a
                list or dict of them (each must have an average), or None
                (every variable this object averages).

        Raises:
            ValueError: a variable given explicitly has no average (nothing changed).
        """
        pairs: list[tuple[Variable, Variable]]
        if target is None:
            alive = [(ref(), shadow) for ref, shadow in self._shadows.values()]
            pairs = [(v, shadow) for v, shadow in alive if v is not None]
        elif isinstance(target, Module):
            averaged = [v for v in target.variables if self._has(v)]
            if not averaged:
                raise JaxvarsValueError(
                    f"ExponentialMovingAverage has no average of any variable of module "
                    f"'{target.name}': call ema.apply(module) first."
                )
            pairs = [(v, self.average(v)) for v in averaged]
        else:
            pairs = [(v, self.average(v)) for v in _variables_of(target)]
        trained = [v.value for v, _ in pairs]
        for v, shadow in pairs:
            v.assign(shadow.value)
        try:
            yield
        finally:
            for (v, _), value in zip(pairs, trained, strict=True):
                v.assign(value)

    def _has(self, variable: Variable) -> bool:
        entry = self._shadows.get(id(variable))
        return entry is not None and entry[0]() is variable

    def _shadow_of(self, variable: Variable) -> Variable:
        if self._has(variable):
            return self._shadows[id(variable)][1]
        store = active_store()
        name = self.average_name(variable)
        with store._lock:
            while name in store:  # another variable of the same name already has one
                name = store._unique_name(self.average_name(variable))
            # The value the variable has now: inside jv.jit, the one the step computed.
            with _naming.prefix(""):
                shadow = Variable(
                    variable,
                    name=name,
                    trainable=False,
                    sharding=variable._sharding,
                )
            adopt(name, shadow)
        store._join(variable, (GraphKeys.MOVING_AVERAGE_VARIABLES,))
        key = id(variable)
        self._shadows[key] = (weakref.ref(variable, lambda _: self._shadows.pop(key, None)), shadow)
        return shadow

    def _decay_now(self) -> Any:
        if self._num_updates is None:
            return self._decay
        steps = jnp.asarray(self._num_updates, jnp.float32)
        return jnp.minimum(self._decay, (1.0 + steps) / (10.0 + steps))


def _variables_of(target: Any) -> list[Variable]:
    if isinstance(target, Module):
        return list(target.trainable_variables)
    return as_variable_list(
        target.values() if isinstance(target, Mapping) else target,
        "ExponentialMovingAverage takes a Variable, a Module, or a list or dict of Variables",
    )
