"""jv.export and jv.load_exported: a model shipped without its Python code, on jax.export.

An export directory holds two files: ``exported.bin``, the serialized
``jax.export.Exported`` of ``jax.jit(pure)`` (``pure`` from
``jv.functional``, so the variables' values are its first argument), and
``values.safetensors``, those values as a ``jv.save`` file. Loading needs
jaxvars and jax only: no Module class, no model code. The loaded callable
owns a copy of the values; what the exported function assigns (a counter)
changes that copy, never the files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._checkpoint import list_variables, load_variable, save
from ._errors import JaxvarsValueError, boundary
from ._functional import pure_form

_EXPORTED, _VALUES = "exported.bin", "values.safetensors"
_BATCH = "batch"  # the symbolic size batch_axes give


@boundary
def export(
    path: str | os.PathLike[str],
    fn: Callable[..., Any],
    *example_args: Any,
    batch_axes: int | Sequence[int | None] | None = None,
    platforms: Sequence[str] | None = None,
) -> None:
    """Export ``fn`` with its variables' current values to the directory ``path``.

    The directory gets the serialized ``jax.export.Exported`` of the pure form
    of ``fn`` (``jv.functional``) and the values as a ``jv.save`` file;
    ``jv.load_exported`` runs it where the model's code is not available.
    Exporting changes no variable.

    Args:
        path: The directory to write (made if missing; its two files replaced).
        fn: A function of arrays that reads (and may assign) variables; a
            Module is one.
        *example_args: Arrays or ``jax.ShapeDtypeStruct``s giving the
            arguments' shapes and dtypes.
        batch_axes: Axes of any size (at least 1): an int (that axis of every
            argument, all of one size), or one entry per argument (an axis or
            None for fixed shapes). None: every shape is fixed.
        platforms: Platforms to lower for, e.g. ``("cpu", "cuda")``; None: the
            default backend's.

    Raises:
        ValueError: an argument lacks the axis ``batch_axes`` names, or
            ``batch_axes`` has another length than the arguments.

    Example:
        >>> import tempfile, jax.numpy as jnp, jaxvars as jv
        >>> w = jv.Variable(jnp.array([1.0, 2.0]), name="w")
        >>> directory = tempfile.mkdtemp()
        >>> jv.export(directory, lambda x: x * w, jnp.ones((3, 2)), batch_axes=0)
        >>> jv.load_exported(directory)(jnp.ones((5, 2))).shape
        (5, 2)
    """
    specs = _specs(example_args, batch_axes)
    pure, keyed = pure_form(fn, specs, {}, None)
    state = {key: v.value for key, v in keyed.items()}
    exported = jax.export.export(jax.jit(pure), platforms=platforms)(state, *specs)
    os.makedirs(path, exist_ok=True)
    # The values first: a directory whose export is missing cannot be loaded by mistake.
    save(os.path.join(path, _VALUES), keyed)
    with open(os.path.join(path, _EXPORTED), "wb") as f:
        f.write(exported.serialize())


@boundary
def load_exported(path: str | os.PathLike[str]) -> Callable[..., Any]:
    """The function ``jv.export`` wrote to ``path``, with its saved values.

    It runs compiled (``jax.jit`` of the exported computation), needs neither
    the model's code nor any Module class, and keeps its own copy of the
    values: assignments the function makes apply to that copy (each loaded
    callable starts from the saved values) and never to the files.

    Raises:
        ValueError: at call time, arguments of another count, shape or dtype
            than the exported signature (named in the message), or arguments
            sharing a batch axis with different sizes.

    Example:
        >>> import tempfile, jax.numpy as jnp, jaxvars as jv
        >>> count = jv.Variable(0, name="count")
        >>> def tick():
        ...     count.assign_add(1)
        ...     return count.value
        >>> directory = tempfile.mkdtemp()
        >>> jv.export(directory, tick)
        >>> loaded = jv.load_exported(directory)
        >>> int(loaded()), int(loaded()), int(count.value)
        (1, 2, 0)
    """
    with open(os.path.join(path, _EXPORTED), "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    values_path = os.path.join(path, _VALUES)
    keys = [key for key, *_ in list_variables(values_path)]
    state = {key: jnp.asarray(load_variable(values_path, key)) for key in keys}
    run = jax.jit(exported.call)
    arguments = exported.in_avals[len(jax.tree_util.tree_leaves(state)) :]

    def loaded(*args: Any) -> Any:
        nonlocal state
        try:
            out, state = run(state, *args)
        except (TypeError, ValueError) as e:
            problem = _mismatch(arguments, args)
            if problem is None:
                raise
            raise JaxvarsValueError(f"{path}: {problem}. {_signature(arguments)}") from e
        return out

    loaded.__name__ = loaded.__qualname__ = "exported"
    return loaded


def _specs(args: Sequence[Any], batch_axes: Any) -> list[jax.ShapeDtypeStruct]:
    """The arguments' shapes and dtypes, with ``batch_axes`` made symbolic."""
    shapes = [(tuple(np.shape(x)), getattr(x, "dtype", None) or np.asarray(x).dtype) for x in args]
    if batch_axes is None:
        axes: list[int | None] = [None] * len(args)
    elif isinstance(batch_axes, int):
        axes = [batch_axes] * len(args)
    else:
        axes = list(batch_axes)
        if len(axes) != len(args):
            raise JaxvarsValueError(
                f"jv.export: batch_axes has {len(axes)} entries for {len(args)} arguments; give "
                "one per argument (an axis, or None for a fixed shape)."
            )
    (batch,) = jax.export.symbolic_shape(_BATCH)
    specs = []
    for i, ((shape, dtype), axis) in enumerate(zip(shapes, axes, strict=True)):
        if axis is not None:
            if not -len(shape) <= axis < len(shape):
                raise JaxvarsValueError(
                    f"jv.export: batch_axes gives argument {i} (shape {shape}) axis {axis}, "
                    "which it does not have."
                )
            axis %= len(shape)
            shape = (*shape[:axis], batch, *shape[axis + 1 :])
        specs.append(jax.ShapeDtypeStruct(shape, dtype))
    return specs


def _mismatch(expected: Sequence[Any], args: Sequence[Any]) -> str | None:
    """What makes ``args`` differ from the exported arguments (None: nothing)."""
    if len(args) != len(expected):
        return f"the export takes {len(expected)} arguments, got {len(args)}"
    sizes: dict[str, int] = {}
    for i, (aval, arg) in enumerate(zip(expected, args, strict=True)):
        shape, dtype = tuple(np.shape(arg)), getattr(arg, "dtype", None) or np.asarray(arg).dtype
        if np.dtype(dtype) != aval.dtype:
            return f"argument {i} has dtype {np.dtype(dtype)}, the export takes {aval.dtype}"
        if len(shape) != len(aval.shape):
            return f"argument {i} has shape {shape}, the export takes {_shown(aval.shape)}"
        for want, got in zip(aval.shape, shape, strict=True):
            if isinstance(want, int):
                if want != got:
                    return f"argument {i} has shape {shape}, the export takes {_shown(aval.shape)}"
            elif sizes.setdefault(str(want), got) != got:
                return (
                    f"argument {i} has {str(want)} = {got} in shape {shape}, but an earlier "
                    f"argument has {str(want)} = {sizes[str(want)]}: they share that axis"
                )
    return None


def _shown(shape: Sequence[Any]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _signature(expected: Sequence[Any]) -> str:
    shown = ", ".join(f"{_shown(aval.shape)} {aval.dtype}" for aval in expected)
    return f"The exported signature: ({shown})."
