"""Restoring before a build: a checkpoint's values wait for the variables a Module creates.

TF2 and Keras restore into a model whose variables do not exist yet: the
values wait, and each is applied when its variable is created by the first
call. ``jv.restore`` on a Module with no variables keeps the checkpoint's
(checked, read) values here; whenever a Module attribute is set to something
holding variables, those under a waiting Module get their value at once,
before the call goes on to use them. ``RestoreStatus.assert_consumed`` is
TF's: what was never applied, and what was created with no value.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from . import _trace
from ._errors import JaxvarsValueError

if TYPE_CHECKING:
    from ._module import Module


class RestoreStatus:
    """What ``jv.restore`` returns: whether every value of the checkpoint found its
    variable (TF's ``CheckpointLoadStatus``). A restore into a built target is
    complete when it returns; one into an unbuilt Module completes as the
    module creates its variables.

    Example:
        >>> import os, tempfile, jax.numpy as jnp, jaxvars as jv
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
        >>> jv.save(path, {"w": jv.Variable(jnp.ones(2))})
        >>> class Lazy(jv.Module):
        ...     def __call__(self, x):
        ...         if not hasattr(self, "w"):
        ...             self.w = jv.Variable(jnp.zeros(x.shape), name="w")
        ...         return x * self.w
        >>> model = Lazy()
        >>> status = jv.restore(path, model)
        >>> status.unconsumed
        ['w']
        >>> model(jnp.ones(2)).tolist(), status.assert_consumed().unconsumed
        ([1.0, 1.0], [])
    """

    def __init__(
        self,
        path: str,
        module: Module | None = None,
        values: Mapping[str, np.ndarray | None] | None = None,
        find: Callable[[str], str | None] | None = None,
        aliases: dict[str, list[str]] | None = None,
        *,
        strict: bool = True,
    ) -> None:
        self._path = path
        self._module = weakref.ref(module) if module is not None else None
        self._values = dict(values or {})
        self._find = find or (lambda key: key)
        self._aliases = aliases or {}  # each key's names of the same value (TF's Keras aliases)
        self._strict = strict
        self._applied: set[str] = set()  # module paths given a value

    @property
    def unconsumed(self) -> list[str]:
        """The checkpoint's keys not yet applied to a variable, sorted."""
        return sorted(self._values)

    def assert_consumed(self) -> RestoreStatus:
        """Raise ``ValueError`` unless every value of the checkpoint was applied (with
        ``strict=False``, keys the model never created are allowed) and every variable
        the module created had a value; returns the status.

        Raises:
            ValueError: listing the keys not applied and the variables created
                with no value in the checkpoint.
        """
        module = self._module() if self._module is not None else None
        paths = module.named_variables() if module is not None else {}
        names = {self._find(path) or path: path for path in paths}
        problems = [
            f"not applied (no variable has its path yet): {k!r}"
            for k in self.unconsumed
            if self._strict and k not in names
        ]
        problems += [
            f"not applied: the variable at {k!r} was added where the restore could not see it "
            "(give it to the module as an attribute, or in a list or dict attribute)"
            for k in self.unconsumed
            if k in names
        ]
        problems += [
            f"created with no value in the checkpoint: {path!r}"
            for name, path in names.items()
            if path not in self._applied and name not in self._values
        ]
        if problems:
            raise JaxvarsValueError(
                f"Restoring {self._path!r} is not complete:\n  " + "\n  ".join(problems)
            )
        return self

    def _apply(self, module: Module) -> None:
        """Give the variables now under ``module`` that still wait their values."""
        from ._checkpoint import placed
        from ._restore import mismatch, narrowed

        for path, variable in module.named_variables().items():
            if path in self._applied:
                continue
            name = self._find(path) or path
            array = self._values.get(name)
            if array is None:
                continue
            problem = mismatch(repr(name), (array.shape, array.dtype), variable)
            value = narrowed(name, array, variable) if not problem else problem[0]
            if isinstance(value, str):
                raise JaxvarsValueError(
                    f"Restoring {self._path!r} into '{module.name}' as it builds: {value}. "
                    "The variable keeps its initial value."
                )
            with jax.ensure_compile_time_eval():  # an array, also while a trace builds the module
                array = placed(value, variable)
            _start_from(variable, array)
            self._applied.add(path)
            for same in self._aliases.get(name, [name]):
                self._values.pop(same, None)
        if not self._values:
            _waiting.pop(module, None)

    def __repr__(self) -> str:
        return f"<jaxvars.RestoreStatus {self._path!r}: {len(self._values)} values waiting>"


def _start_from(variable: Any, array: Any) -> None:
    """Make ``array`` the first value of ``variable``, just created: not an assignment,
    which a transform building the module would record and may discard (``jv.grad``'s
    build pass, a jv.jit trace that fails, ``jv.eval_shape``), but its initial value
    (inside ``jv.eval_shape`` too: the abstract module comes out restored)."""
    frame = _trace.deferring_frame()
    if frame is not None and frame.pending:
        for i, (created, attribute, _) in enumerate(frame.pending):
            if created is variable and attribute == "_array":
                # Created from a value the trace computes: it gives this one instead.
                frame.pending[i] = (variable, attribute, array)
                frame.values[variable] = array  # what the rest of the trace reads
    with _trace.STATE_LOCK:
        _trace.LAST[0] = None  # a variable's array changed outside a step (see _trace.LAST)
        variable._array = array


# The Modules whose restore waits for variables, with its status.
_waiting: weakref.WeakKeyDictionary[Module, RestoreStatus] = weakref.WeakKeyDictionary()


def wait(module: Module, status: RestoreStatus) -> None:
    _waiting[module] = status


def created_under(module: Module) -> None:
    """``module`` was just given variables: apply what a restore into it (or into a
    module holding it) keeps waiting."""
    if not _waiting:
        return
    for root, status in list(_waiting.items()):
        if _holds(root, module):
            status._apply(root)


def _holds(root: Module, module: Module) -> bool:
    current: Any = module
    while current is not None:
        if current is root:
            return True
        held_by = current.__dict__.get("_module_held_by")
        current = held_by[0]() if held_by is not None else None
    return False
