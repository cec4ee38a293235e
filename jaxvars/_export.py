"""jv.export and jv.load_exported: a model shipped without its Python code, on jax.export.

An export directory holds two files: ``exported.bin``, the serialized
``jax.export.Exported`` of the pure form (``jv.functional``: the variables'
values are its first argument; it returns its result and the values of the
variables it assigns, only those), and ``values.safetensors``, the values as
a ``jv.save`` file. Loading needs
jaxvars and jax only: no Module class, no model code. The loaded callable
owns a copy of the values; what the exported function assigns (a counter)
changes that copy, never the files.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._atomic_file import replace_atomically
from ._checkpoint import open_checkpoint, save
from ._errors import JaxvarsTypeError, JaxvarsValueError, boundary
from ._functional import pure_form
from ._safetensors import problems_error

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

    def assigning(state: dict[str, Any], *args: Any) -> tuple[Any, dict[str, Any]]:
        # Only what the function assigns comes back: values passed through would
        # be copied out of every call (measured: 1.2x a call of an 8-layer MLP).
        out, ends = pure(state, *args)
        return out, {key: value for key, value in ends.items() if value is not state[key]}

    exported = jax.export.export(jax.jit(assigning), platforms=platforms)(state, *specs)
    os.makedirs(path, exist_ok=True)
    # Each file is replaced atomically; load_exported checks that the two agree
    # (an export interrupted between them leaves a pair it refuses).
    save(os.path.join(path, _VALUES), keyed)
    replace_atomically(os.path.join(path, _EXPORTED), [bytes(exported.serialize())], durable=False)


@boundary
def load_exported(path: str | os.PathLike[str]) -> Callable[..., Any]:
    """The function ``jv.export`` wrote to ``path``, with its saved values.

    It runs compiled (``jax.jit`` of the exported computation), needs neither
    the model's code nor any Module class, and keeps its own copy of the
    values: assignments the function makes apply to that copy (each loaded
    callable starts from the saved values) and never to the files.

    Arguments are arrays or pytrees of them, as exported; as with
    ``jax.jit``, a float64 NumPy array is taken as float32 while x64 is off.

    Raises:
        ValueError: ``path`` is not an export directory, or its two files are
            from different exports; at call time, arguments of another count,
            shape or dtype than the exported signature (named in the message),
            or arguments sharing a batch axis with different sizes.

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
    missing = [f for f in (_EXPORTED, _VALUES) if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise JaxvarsValueError(
            f"{os.fspath(path)!r} is not a jv.export directory: it lacks {' and '.join(missing)}."
        )
    with open(os.path.join(path, _EXPORTED), "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    values = open_checkpoint(os.path.join(path, _VALUES), restoring=False)
    arrays, problems = values.read_many(sorted(values.listing()))
    if problems or values.problems:
        raise problems_error(
            os.path.join(path, _VALUES), values.problems + problems, restoring=False
        )
    state = {key: jnp.asarray(array) for key, array in arrays.items()}
    leaves = jax.tree_util.tree_leaves(state)
    saved = [(tuple(x.shape), x.dtype) for x in leaves]
    if saved != [(tuple(a.shape), a.dtype) for a in exported.in_avals[: len(leaves)]]:
        raise JaxvarsValueError(
            f"{path}: its values ({_VALUES}) do not match its export ({_EXPORTED}): they come "
            "from different exports (one interrupted?). Export again."
        )
    run = jax.jit(exported.call)
    arguments = exported.in_avals[len(leaves) :]

    def loaded(*args: Any) -> Any:
        nonlocal state
        try:
            out, assigned = run(state, *args)
            if assigned:
                state = {**state, **assigned}
        except (TypeError, ValueError) as e:
            problem = _mismatch(arguments, args)
            if problem is None:
                raise
            raise JaxvarsValueError(f"{path}: {problem}. {_signature(arguments)}") from e
        return out

    loaded.__name__ = loaded.__qualname__ = "exported"
    return loaded


def _specs(args: Sequence[Any], batch_axes: Any) -> list[Any]:
    """Each argument's shapes and dtypes (a pytree of them for a pytree argument),
    with ``batch_axes`` made symbolic."""
    (batch,) = jax.export.symbolic_shape(_BATCH)
    every = isinstance(batch_axes, int)

    def spec(i: int, axis: int | None, path: Any, leaf: Any) -> jax.ShapeDtypeStruct:
        shape = tuple(np.shape(leaf))
        if axis is not None and (shape or not every):  # an int skips scalars
            if not -len(shape) <= axis < len(shape):
                raise JaxvarsValueError(
                    f"jv.export: batch_axes gives {_name(i, path)} (shape {shape}) axis {axis}, "
                    "which it does not have."
                )
            axis %= len(shape)
            shape = (*shape[:axis], batch, *shape[axis + 1 :])
        return jax.ShapeDtypeStruct(shape, _dtype(leaf))

    return [
        jax.tree_util.tree_map_with_path(functools.partial(spec, i, axis), arg)
        for i, (arg, axis) in enumerate(zip(args, _axes(batch_axes, len(args)), strict=True))
    ]


def _axes(batch_axes: Any, count: int) -> list[int | None]:
    """``batch_axes`` as one axis (or None) per argument."""
    if batch_axes is None:
        return [None] * count
    if isinstance(batch_axes, int) and not isinstance(batch_axes, bool):
        return [batch_axes] * count
    if not isinstance(batch_axes, (tuple, list)) or not all(
        a is None or (isinstance(a, int) and not isinstance(a, bool)) for a in batch_axes
    ):
        raise JaxvarsTypeError(
            f"jv.export: batch_axes is None, an int, or a tuple of one int or None per "
            f"argument; got {batch_axes!r}."
        )
    if len(batch_axes) != count:
        raise JaxvarsValueError(
            f"jv.export: batch_axes has {len(batch_axes)} entries for {count} arguments; give "
            "one per argument (an axis, or None for a fixed shape)."
        )
    return list(batch_axes)


def _mismatch(expected: Sequence[Any], args: Sequence[Any]) -> str | None:
    """What makes ``args`` differ from the exported arguments (None: nothing)."""
    leaves = jax.tree_util.tree_flatten_with_path(list(args))[0]
    if len(leaves) != len(expected):
        return f"the export takes {len(expected)} arrays (its arguments' leaves), got {len(leaves)}"
    sizes: dict[str, int] = {}
    for aval, ((index, *path), leaf) in zip(expected, leaves, strict=True):
        name = _name(index.idx, path)
        shape, dtype = tuple(np.shape(leaf)), _dtype(leaf)
        if dtype != aval.dtype:
            return f"{name} has dtype {dtype}, the export takes {aval.dtype}"
        wrong = f"{name} has shape {shape}, the export takes {_shown(aval.shape)}"
        if len(shape) != len(aval.shape):
            return wrong
        for want, got in zip(aval.shape, shape, strict=True):
            if isinstance(want, int):
                if want != got:
                    return wrong
            elif got < 1:
                return f"{name} has {want} = {got} in shape {shape}; the export takes 1 or more"
            elif sizes.setdefault(str(want), got) != got:
                return (
                    f"{name} has {want} = {got} in shape {shape}, but an earlier argument "
                    f"has {want} = {sizes[str(want)]}: they share that axis"
                )
    return None


def _name(index: int, path: Any) -> str:
    return f"argument {index}{jax.tree_util.keystr(tuple(path))}"


def _dtype(leaf: Any) -> np.dtype:
    """The dtype ``jax.jit`` gives ``leaf`` (64-bit types narrow while x64 is off)."""
    dtype = getattr(leaf, "dtype", None)
    return np.dtype(
        jax.dtypes.canonicalize_dtype(dtype if dtype is not None else np.result_type(leaf))
    )


def _shown(shape: Sequence[Any]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _signature(expected: Sequence[Any]) -> str:
    shown = ", ".join(f"{_shown(aval.shape)} {aval.dtype}" for aval in expected)
    return f"The exported signature: ({shown})."
