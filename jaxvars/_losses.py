"""Module.add_loss and Module.losses: losses a forward pass adds (Keras's activity losses).

Each added loss is written into a hidden scalar variable of its module (its
k-th slot), and the number added this call into another. Variables are what
every jaxvars transform carries out of its trace, so a loss added inside
``jv.jit``, ``jv.grad`` or a lifted transform comes out as a value after it,
never as a leaked tracer, and a cached ``jv.jit`` call that never runs the
Python code still leaves its own losses behind. The slots are in no
collection and in no Module's ``variables``: checkpoints, optimisers and
``jv.global_variables()`` never see them.
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
from jax.core import Tracer

from . import _naming, _trace
from ._errors import JaxvarsValueError
from ._operators import unwrap
from ._variable import Variable

if TYPE_CHECKING:
    from ._module import Module


class _Record:
    """A module's added losses: ``slots[:count]`` hold this call's."""

    __slots__ = ("slots", "count", "added")

    def __init__(self, module: Module) -> None:
        self.slots: list[Variable] = []
        with _trace.outside(), _naming.prefix(""):
            self.count = Variable(
                jnp.zeros((), jnp.int32),
                name=f"{module.scope_name}/losses_added",
                trainable=False,
                collections=[],
            )
        self.added = 0  # the count as the Python code running now has it


# Modules that ever added a loss: a top-level call clears those below it.
_with_losses: weakref.WeakSet[Module] = weakref.WeakSet()
_calling: contextvars.ContextVar[bool] = contextvars.ContextVar("jaxvars_calling", default=False)


@contextlib.contextmanager
def call_of(module: Module) -> Iterator[None]:
    """Around a Module's methods: a top-level call clears the losses below it."""
    if _calling.get():
        yield
        return
    if _with_losses:
        below = {id(m) for m in (module, *module.submodules)}
        for each in list(_with_losses):
            if id(each) in below:
                record: _Record = each.__dict__["_module_losses"]
                record.added = 0
                record.count.assign(0)
    token = _calling.set(True)
    try:
        yield
    finally:
        _calling.reset(token)


IN_LIFTED_BODY = (
    "Module '{name}': add_loss inside a {what} is not supported: its branches, iterations or "
    "lanes trace apart, so the losses each adds cannot be told apart. Return the loss from "
    "the body (a scan's ys, a branch's output) and add it after the transform."
)


def add_loss(module: Module, loss: Any) -> None:
    """Keep ``loss`` (a scalar) as one of ``module``'s losses of this call."""
    frame = _trace.current.get()
    while frame is not None:
        if frame.lifting is not None:
            raise JaxvarsValueError(
                IN_LIFTED_BODY.format(name=module.name, what=frame.lifting.what)
            )
        frame = frame.parent
    value = jnp.asarray(unwrap(loss))
    if value.shape != ():
        raise JaxvarsValueError(
            f"Module '{module.name}': add_loss takes a scalar loss, got shape {value.shape}; "
            "reduce it first (jnp.sum or jnp.mean)."
        )
    if not jnp.issubdtype(value.dtype, jnp.floating):
        value = value.astype(jnp.float32)
    record = module.__dict__.get("_module_losses")
    if record is None:
        record = _Record(module)
        object.__setattr__(module, "_module_losses", record)  # not a tracked attribute
        _with_losses.add(module)
    k = record.added
    if k == len(record.slots) or record.slots[k].dtype != value.dtype:
        with _trace.outside(), _naming.prefix(""):
            slot = Variable(
                jnp.zeros((), value.dtype),
                name=f"{module.scope_name}/added_loss_{k}",
                trainable=False,
                collections=[],
            )
        record.slots[k:] = [slot]
    record.slots[k].assign(value)
    record.added = k + 1
    record.count.assign(k + 1)


def losses(module: Module) -> list[jax.Array]:
    """The losses ``module`` and its submodules added in their latest call."""
    found: list[jax.Array] = []
    for each in (module, *module.submodules):
        record: _Record | None = each.__dict__.get("_module_losses")
        if record is None or record.count.is_abstract:  # made in jv.eval_shape: none computed
            continue
        count = record.count._value
        # Eagerly the count variable says (a cached jv.jit call ran no Python);
        # inside a trace, the Python code that is running knows.
        n = record.added if isinstance(count, Tracer) else int(count)
        found.extend(slot._value for slot in record.slots[:n])
    return found
