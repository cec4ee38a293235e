"""jv.save, jv.list_variables and jv.load_variable: checkpoints written atomically.

``jv.save`` writes a standard safetensors file (``_safetensors`` reads it), so
other tools can read it. ``jv.list_variables`` and ``jv.load_variable`` also
read TensorFlow checkpoints (``_tf_checkpoint``), without TensorFlow; both
kinds open through ``open_checkpoint``, as ``jv.restore`` does.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from ._atomic_file import replace_atomically
from ._errors import JaxvarsTypeError, JaxvarsValueError, Unreadable, boundary
from ._module import Module
from ._optimizer import Optimizer
from ._safetensors import METADATA, NAMES, SafetensorsFile, as_bytes, checksum, problems_error
from ._store import Store
from ._tf_checkpoint import TFCheckpoint, prefix_of
from ._variable import Variable

Checkpoint = SafetensorsFile | TFCheckpoint


def open_checkpoint(path: str | os.PathLike[str], *, restoring: bool) -> Checkpoint:
    """The checkpoint at ``path``: a TensorFlow one (a prefix, or a directory with
    TF's ``checkpoint`` state file), else a safetensors file. Raises ``ValueError``
    if it cannot be read at all."""
    path = os.fsdecode(path)
    prefix = prefix_of(path)
    if prefix is None and os.path.isdir(path):
        raise JaxvarsValueError(
            f"{path!r} is a directory without a TensorFlow 'checkpoint' state file naming a "
            "checkpoint that exists; give a checkpoint file, or a TensorFlow checkpoint prefix."
        )
    if prefix is None and not os.path.isfile(path):
        raise JaxvarsValueError(
            f"No checkpoint at {path!r}: no such file, and no TensorFlow checkpoint with that "
            f"prefix (no {os.path.basename(path) + '.index'!r})."
        )
    try:
        if prefix is not None:
            return TFCheckpoint(prefix)
        return SafetensorsFile(path, restoring=restoring)
    except Unreadable as e:
        raise problems_error(prefix or path, [str(e)], restoring=restoring) from None


@boundary
def save(path: str | os.PathLike[str], target: Any, *, durable: bool = False) -> None:
    """Save ``target``'s variables to ``path``, atomically.

    The file is written beside ``path`` and swapped in, so an interrupted save
    (an exception, a killed process) leaves the previous checkpoint intact.
    The previous checkpoint's disk space is freed on a background thread, after
    ``save`` returns. A symbolic link at ``path`` is followed and kept.

    Args:
        path: The checkpoint file (conventionally ``*.safetensors``).
        target: A Module (keys: its ``named_variables()`` paths), a Store (its
            names), an Optimizer (its state, keyed relative to its scope), a
            dict (its keys; nested dicts join with ``/``) or a list of
            variables (their names, which must be unique).
        durable: Also flush the file and the rename to disk (``fsync``) before
            returning, so that the checkpoint survives a power loss; this
            writes at disk speed rather than page-cache speed.

    Raises:
        ValueError: duplicate keys, a key ``__metadata__`` (the header's own),
            ``path`` is a directory, or variables not fully addressable here.
        TypeError: a variable of a dtype the format cannot hold (int4, say).

    Example:
        >>> import os, tempfile
        >>> import jaxvars as jv
        >>> v = jv.Variable([1.0, 2.0], name="v")
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.safetensors")
        >>> jv.save(path, [v])
        >>> _ = v.assign([0.0, 0.0])
        >>> jv.restore(path, [v]).assert_consumed().unconsumed
        []
        >>> v.numpy()
        array([1., 2.], dtype=float32)
    """
    variables = checkpoint_keys(target)
    arrays = {}
    for key, variable in variables.items():
        if variable.dtype not in NAMES:
            raise JaxvarsTypeError(
                f"jv.save: variable '{variable.name}' has dtype {variable.dtype}, which the "
                f"checkpoint format cannot hold (it holds {', '.join(map(str, NAMES))}). "
                "Save a cast copy in a dict, e.g. {'w': jv.Variable(w.value.astype(jnp.float32))}."
            )
        value = variable.value
        if not value.is_fully_addressable:
            raise JaxvarsValueError(
                f"jv.save: variable '{variable.name}' is sharded over devices of other "
                "processes; save from a single process, or gather it first "
                "(jax.experimental.multihost_utils.process_allgather)."
            )
        arrays[key] = np.asarray(value, order="C")  # no copy on CPU; keeps 0-d shapes
    header: dict[str, Any] = {}
    checksums = {}
    offset = 0
    # Largest items first (then by key), as the safetensors writer lays them out: every
    # offset is then a multiple of its dtype's size, so zero-copy loaders need no copy.
    arrays = dict(sorted(arrays.items(), key=lambda item: (-item[1].dtype.itemsize, item[0])))
    for key, array in arrays.items():
        size = array.nbytes
        header[key] = {
            "dtype": NAMES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + size],
        }
        checksums[key] = checksum(array)
        offset += size
    header[METADATA] = {"format": "jaxvars", "sum64": json.dumps(checksums)}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # data starts 8-byte aligned, as safetensors does
    data = (as_bytes(array) for array in arrays.values())  # views, made as they are written
    replace_atomically(
        path, itertools.chain([struct.pack("<Q", len(encoded)), encoded], data), durable=durable
    )


@boundary
def list_variables(path: str | os.PathLike[str]) -> list[tuple[str, tuple[int, ...], Any]]:
    """The ``(key, shape, dtype)`` of every value in a checkpoint, sorted by key.

    Reads only the index, without a target (as ``tf.train.list_variables``).
    ``path`` is a ``jv.save`` file (or any safetensors file), or a TensorFlow
    checkpoint: a prefix (``model.ckpt-1000``) or a directory holding TF's
    ``checkpoint`` state file. TF2 keys are object paths
    (``model/layer_with_weights-0/kernel``), string tensors have dtype
    ``object``; a dtype jaxvars cannot represent is given by its name in the
    file (``'F8_E8M0'``).

    Raises:
        ValueError: the file is not a readable checkpoint (the problems listed).

    Example:
        >>> import os, tempfile
        >>> import jaxvars as jv
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
        >>> jv.save(path, {"w": jv.Variable([[1.0, 2.0]]), "step": jv.Variable(3)})
        >>> jv.list_variables(path)
        [('step', (), dtype('int32')), ('w', (1, 2), dtype('float32'))]
        >>> jv.load_variable(path, "w")
        array([[1., 2.]], dtype=float32)
    """
    checkpoint = open_checkpoint(path, restoring=False)
    if checkpoint.problems:
        raise problems_error(path, checkpoint.problems, restoring=False)
    listing = checkpoint.listing().items()
    return sorted((key, found[0], found[1]) for key, found in listing if found is not None)


@boundary
def load_variable(path: str | os.PathLike[str], key: str) -> np.ndarray:
    """One value of a checkpoint (as for ``jv.list_variables``) as a NumPy array,
    without a target (as ``tf.train.load_variable``); its checksum is verified.

    Raises:
        ValueError: ``key`` is not in the checkpoint (the message lists some keys
            that are), its dtype is one jaxvars cannot represent, or its bytes
            are truncated or corrupted.

    Example:
        >>> import os, tempfile
        >>> import jaxvars as jv
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
        >>> jv.save(path, {"bias": jv.Variable([0.5, -0.5])})
        >>> jv.load_variable(path, "bias")
        array([ 0.5, -0.5], dtype=float32)
    """
    checkpoint = open_checkpoint(path, restoring=False)
    if checkpoint.problems:
        raise problems_error(path, checkpoint.problems, restoring=False)
    listing = checkpoint.listing()
    key = checkpoint.find(key) or key
    if key not in listing:
        raise JaxvarsValueError(
            f"Checkpoint {os.fspath(path)!r} has no key {key!r}; its {len(listing)} keys: "
            f"{listed(listing)}. jv.list_variables(path) lists them all."
        )
    try:
        return checkpoint.read(key)
    except Unreadable as e:
        raise problems_error(path, [str(e)], restoring=False) from None


def listed(keys: Any, most: int = 10) -> str:
    """Some of ``keys``, sorted, for a message."""
    keys = sorted(keys)
    return ", ".join(repr(k) for k in keys[:most]) + (", ..." if len(keys) > most else "")


def checkpoint_keys(target: Any, prefix: str = "") -> dict[str, Variable]:
    """The ``{key: variable}`` a checkpoint of ``target`` holds (see ``jv.save``)."""
    keyed = _keys_of(target, prefix)
    if METADATA in keyed:
        raise JaxvarsValueError(
            f"Checkpoint key {METADATA!r} names variable '{keyed[METADATA].name}', but the "
            "file format keeps that key for its own header. Give the variable another key "
            "(a dict key or name)."
        )
    return keyed


def _keys_of(target: Any, prefix: str) -> dict[str, Variable]:
    join = (lambda key: f"{prefix}/{key}") if prefix else (lambda key: str(key))
    if isinstance(target, Variable):
        return {prefix or target.name: target}
    if isinstance(target, Module):
        return {join(path): v for path, v in target.named_variables().items()}
    if isinstance(target, Optimizer):
        return {join(key): v for key, v in target.checkpoint_variables().items()}
    if isinstance(target, Store):
        return {join(name): v for name, v in target.items()}
    if isinstance(target, Mapping):
        keyed: dict[str, Variable] = {}
        for key, value in target.items():
            for inner, variable in _keys_of(value, join(key)).items():
                if inner in keyed:
                    raise JaxvarsValueError(f"Checkpoint key {inner!r} appears twice.")
                keyed[inner] = variable
        return keyed
    if isinstance(target, (list, tuple)):
        bad = [type(v).__name__ for v in target if not isinstance(v, Variable)]
        if bad:
            raise JaxvarsTypeError(
                f"A list to checkpoint must hold Variables (keyed by name); got {', '.join(bad)}. "
                "Use a dict to give other objects keys."
            )
        names = [join(v.name) for v in target]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise JaxvarsValueError(
                f"Variables in a checkpointed list are keyed by name, and these names repeat: "
                f"{duplicates}. Use a dict to give them distinct keys."
            )
        return dict(zip(names, target, strict=True))
    raise JaxvarsTypeError(
        "A checkpoint target is a Module, Store, Optimizer, Variable, or a dict/list of "
        f"them; got {type(target).__name__}."
    )


def placed(array: np.ndarray, variable: Variable) -> jax.Array:
    """The host array on the variable's devices, each receiving only its part.

    The host buffer is aligned and ours alone, so JAX may alias it instead of
    copying (it does on CPU).
    """
    return jax.device_put(array, variable._sharding, may_alias=True)
