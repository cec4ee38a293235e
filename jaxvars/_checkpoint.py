"""jv.save and jv.restore: checkpoints in the safetensors format, written atomically.

The file is a standard safetensors file (an 8-byte little-endian header length,
a JSON header giving each tensor's dtype, shape and byte range, then the raw
bytes), so other tools can read it. Nothing in it is ever unpickled: loading
parses JSON and copies bytes, so a checkpoint cannot run code.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import struct
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._atomic_file import replace_atomically
from ._errors import JaxvarsTypeError, JaxvarsValueError, boundary
from ._module import Module
from ._optimizer import Optimizer
from ._store import Store, mismatches
from ._variable import Variable

_DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype(np.uint16),
    "I16": np.dtype(np.int16),
    "U32": np.dtype(np.uint32),
    "I32": np.dtype(np.int32),
    "U64": np.dtype(np.uint64),
    "I64": np.dtype(np.int64),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(jnp.bfloat16),
    "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64),
    "C64": np.dtype(np.complex64),
    "F8_E4M3": np.dtype(jnp.float8_e4m3fn),
    "F8_E5M2": np.dtype(jnp.float8_e5m2),
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_MAX_HEADER = 100 * 2**20  # a header larger than this is a corrupted length field
_MAX_DIMENSIONS = 64  # NumPy's: an entry with more could not be read into an array
_METADATA = "__metadata__"  # the header's own entry, never a tensor


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
        >>> jv.restore(path, [v])
        >>> v.numpy()
        array([1., 2.], dtype=float32)
    """
    variables = checkpoint_keys(target)
    arrays = {}
    for key, variable in variables.items():
        if variable.dtype not in _NAMES:
            raise JaxvarsTypeError(
                f"jv.save: variable '{variable.name}' has dtype {variable.dtype}, which the "
                f"checkpoint format cannot hold (it holds {', '.join(map(str, _NAMES))}). "
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
    for key, array in arrays.items():
        size = array.nbytes
        header[key] = {
            "dtype": _NAMES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + size],
        }
        checksums[key] = _checksum(array)
        offset += size
    header[_METADATA] = {"format": "jaxvars", "sum64": json.dumps(checksums)}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # data starts 8-byte aligned, as safetensors does
    data = (_bytes(array) for array in arrays.values())  # views, made as they are written
    replace_atomically(
        path, itertools.chain([struct.pack("<Q", len(encoded)), encoded], data), durable=durable
    )


@boundary
def restore(path: str | os.PathLike[str], target: Any, *, strict: bool = True) -> None:
    """Load ``target``'s variables from ``path``, after checking all of it.

    Every key, shape and dtype must match exactly. A missing key, a key the
    target lacks (unless ``strict=False``), a truncated or corrupted file: each
    is reported, all in one ``ValueError``, and then no variable has changed.
    Sharded variables keep their shardings; each device receives its part
    from host memory.

    Args:
        path: A file written by ``jv.save`` (or any safetensors file).
        target: As for ``jv.save``.
        strict: Whether keys in the file that the target lacks are an error.

    Raises:
        ValueError: listing every problem found; nothing was changed.
    """
    variables = checkpoint_keys(target)
    with open(path, "rb") as f:
        header = _read_header(f, path, restoring=True)
        found = {
            key: (entry["shape"], _DTYPES[entry["dtype"]]) if entry else None  # None: unreadable
            for key, entry in header.entries.items()
        }
        problems = header.problems + mismatches(variables, found, strict=strict, source="file")
        if problems:
            raise _problems(path, problems, restoring=True)
        arrays, sums = {}, {}
        # Summing array i on a second thread while array i + 1 is read hides the checksum.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxvars-checksum") as summer:
            for key, variable in variables.items():
                begin, end = header.entries[key]["data_offsets"]
                array = _aligned_empty(variable.shape, variable.dtype)
                f.seek(header.data_start + begin)
                if f.readinto(_bytes(array)) != end - begin:
                    problems.append(f"{key!r}: the file ends inside its data (truncated)")
                elif key in header.checksums:
                    sums[key] = summer.submit(_checksum, array)
                arrays[key] = array
        problems += [
            f"{key!r}: its data does not match its checksum (corrupted)"
            for key, total in sums.items()
            if total.result() != header.checksums[key]
        ]
    if problems:
        raise _problems(path, problems, restoring=True)
    for key, variable in variables.items():
        variable.assign(_placed(arrays[key], variable))


@boundary
def list_variables(path: str | os.PathLike[str]) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    """The ``(key, shape, dtype)`` of every value in a ``jv.save`` file, sorted by key.

    Reads only the header, without a target (as ``tf.train.list_variables``).

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
    with open(path, "rb") as f:
        header = _read_header(f, path, restoring=False)
    if header.problems:
        raise _problems(path, header.problems, restoring=False)
    return sorted(
        (key, tuple(entry["shape"]), _DTYPES[entry["dtype"]])
        for key, entry in header.entries.items()
    )


@boundary
def load_variable(path: str | os.PathLike[str], key: str) -> np.ndarray:
    """One value of a ``jv.save`` file as a NumPy array, without a target
    (as ``tf.train.load_variable``); its checksum is verified.

    Raises:
        ValueError: ``key`` is not in the file (the message lists some keys that
            are), or its bytes are truncated or corrupted.

    Example:
        >>> import os, tempfile
        >>> import jaxvars as jv
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
        >>> jv.save(path, {"bias": jv.Variable([0.5, -0.5])})
        >>> jv.load_variable(path, "bias")
        array([ 0.5, -0.5], dtype=float32)
    """
    with open(path, "rb") as f:
        header = _read_header(f, path, restoring=False)
        if header.problems:
            raise _problems(path, header.problems, restoring=False)
        entry = header.entries.get(key)
        if entry is None:
            keys = sorted(header.entries)
            shown = ", ".join(repr(k) for k in keys[:10]) + (", ..." if len(keys) > 10 else "")
            raise JaxvarsValueError(
                f"Checkpoint {os.fspath(path)!r} has no key {key!r}; its {len(keys)} keys: "
                f"{shown}. jv.list_variables(path) lists them all."
            )
        array = _aligned_empty(tuple(entry["shape"]), _DTYPES[entry["dtype"]])
        begin, end = entry["data_offsets"]
        f.seek(header.data_start + begin)
        if f.readinto(_bytes(array)) != end - begin:
            problem = f"{key!r}: the file ends inside its data (truncated)"
            raise _problems(path, [problem], restoring=False)
    if key in header.checksums and _checksum(array) != header.checksums[key]:
        problem = f"{key!r}: its data does not match its checksum (corrupted)"
        raise _problems(path, [problem], restoring=False)
    return array


def checkpoint_keys(target: Any, prefix: str = "") -> dict[str, Variable]:
    """The ``{key: variable}`` a checkpoint of ``target`` holds (see ``jv.save``)."""
    keyed = _keys_of(target, prefix)
    if _METADATA in keyed:
        raise JaxvarsValueError(
            f"Checkpoint key {_METADATA!r} names variable '{keyed[_METADATA].name}', but the "
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


class _Header(NamedTuple):
    """A checked header: each tensor's entry ({} where unreadable), the checksums,
    where the data starts, and the problems found."""

    entries: dict[str, dict[str, Any]]
    checksums: dict[str, int]
    data_start: int
    problems: list[str]


def _read_header(f: Any, path: Any, *, restoring: bool) -> _Header:
    """Parse and check the header; raises if it cannot be read at all."""
    file_size = os.fstat(f.fileno()).st_size
    raw = f.read(8)
    if len(raw) < 8:
        problem = "the file is too short to be a checkpoint (truncated or empty)"
        raise _problems(path, [problem], restoring=restoring)
    (length,) = struct.unpack("<Q", raw)
    if length > min(_MAX_HEADER, file_size - 8):
        problem = "the header length is impossible: not a checkpoint, or corrupted"
        raise _problems(path, [problem], restoring=restoring)
    try:
        # Constants such as Infinity and NaN are not JSON; refusing them keeps
        # every number an int or a plain float.
        header = json.loads(
            f.read(length), parse_constant=_refuse_constant, object_pairs_hook=_unique_keys
        )
    except _RepeatedKey as e:
        problem = f"the header is malformed (corrupted): the key {e.args[0]!r} appears twice"
        raise _problems(path, [problem], restoring=restoring) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        problem = f"the header is not valid JSON (corrupted): {str(e)[:200]}"
        raise _problems(path, [problem], restoring=restoring) from None
    if not isinstance(header, dict):
        raise _problems(path, ["the header is not a JSON object (corrupted)"], restoring=restoring)
    checksums, problem = _checksums(header)
    problems = [problem] if problem else []
    data_size = file_size - 8 - length
    entries: dict[str, dict[str, Any]] = {}
    ranges = []
    for key, entry in header.items():
        if key == _METADATA:
            continue
        problem = _check_entry(entry, data_size)
        if problem:
            problems.append(f"{key!r}: {problem}")
            entries[key] = {}
            continue
        entries[key] = entry
        if entry["data_offsets"][0] != entry["data_offsets"][1]:
            ranges.append((*entry["data_offsets"], key))
    ranges.sort()
    problems += [
        f"{key!r}: its bytes overlap those of {earlier!r} (corrupted)"
        for (_, earlier_end, earlier), (begin, _, key) in zip(ranges, ranges[1:], strict=False)
        if begin < earlier_end
    ]
    return _Header(entries, checksums, 8 + length, problems)


class _RepeatedKey(ValueError):
    """A key twice in one JSON object: which value a reader takes is not defined."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _RepeatedKey(key)
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_entry(entry: Any, data_size: int) -> str | None:
    bad = "the header entry is malformed (corrupted): "
    if not isinstance(entry, dict):
        return bad + f"it is {_json_type(entry)}, not an object"
    for field in ("dtype", "shape", "data_offsets"):
        if field not in entry:
            return bad + f"it has no {field}"
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str):
        return bad + f"its dtype {_shown(dtype)} is not a string"
    if dtype not in _DTYPES:
        return (
            f"dtype {dtype[:40]!r} is not one this version reads (corrupted, or written by a "
            f"newer version; it reads {', '.join(_DTYPES)})"
        )
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        return bad + f"its shape {_shown(shape)} is not a list of non-negative integers"
    if len(shape) > _MAX_DIMENSIONS:
        return bad + f"its shape has {len(shape)} dimensions (at most {_MAX_DIMENSIONS})"
    itemsize = _DTYPES[dtype].itemsize
    # NumPy's limit, which a zero-size shape must meet too: (0, 2**62) is no array.
    if math.prod(d for d in shape if d) * itemsize >= 2**63:
        return bad + f"its shape {_shown(shape)} is too large"
    pair = isinstance(offsets, list) and len(offsets) == 2
    if not pair or any(type(x) is not int for x in offsets):
        return bad + f"its data_offsets {_shown(offsets)} are not a [begin, end] pair of integers"
    begin, end = offsets
    if not 0 <= begin <= end:
        return bad + f"its data_offsets {_shown(offsets)} are not a byte range (0 <= begin <= end)"
    if end - begin != math.prod(shape) * itemsize:
        return "its byte range does not match its shape and dtype (corrupted)"
    if end > data_size:
        return "its data lies beyond the end of the file (truncated or corrupted)"
    return None


def _checksums(header: dict[str, Any]) -> tuple[dict[str, int], str | None]:
    """The per-tensor checksums in the header's metadata, or a problem with them.

    The format makes ``__metadata__`` optional, and an object of strings when present.
    """
    if _METADATA not in header:
        return {}, None  # a safetensors file from another tool: nothing to check
    metadata = header[_METADATA]
    bad = "the header's __metadata__ is malformed (corrupted): "
    if not isinstance(metadata, dict):
        return {}, bad + f"it is {_json_type(metadata)}, not an object of strings"
    for name, value in metadata.items():
        if not isinstance(value, str):
            return {}, bad + f"its {name!r} is {_json_type(value)}, not a string"
    try:
        sums = json.loads(metadata.get("sum64", "{}"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        sums = None
    if not isinstance(sums, dict) or any(type(x) is not int for x in sums.values()):
        return {}, bad + "its 'sum64' is not an object of integer checksums"
    return sums, None


def _json_type(value: Any) -> str:
    """What ``value`` is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    kinds = {int: "a number", float: "a number", str: "a string", list: "an array"}
    return kinds.get(type(value), "an object")


def _shown(value: Any) -> str:
    """``value`` as the file spells it, cut short."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _placed(array: np.ndarray, variable: Variable) -> jax.Array:
    """The host array on the variable's devices, each receiving only its part.

    The host buffer is aligned and ours alone, so JAX may alias it instead of
    copying (it does on CPU).
    """
    return jax.device_put(array, variable._sharding, may_alias=True)


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype, align: int = 64) -> np.ndarray:
    """An uninitialised array whose data is ``align``-byte aligned (XLA's CPU alignment)."""
    size = math.prod(shape) * dtype.itemsize
    raw = np.empty(size + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start : start + size].view(dtype).reshape(shape)


def _checksum(array: np.ndarray) -> int:
    """A wrapping 64-bit sum of the data's words: catches flipped or zeroed bytes
    at memory speed (a CRC would halve restore throughput)."""
    data = array.reshape(-1).view(np.uint8)
    whole = data.size // 8 * 8
    total = data[:whole].view(np.uint64).sum(dtype=np.uint64) if whole else np.uint64(0)
    return int(total) ^ int(data[whole:].sum(dtype=np.uint64)) << 1 ^ data.size


def _bytes(array: np.ndarray) -> memoryview:
    return memoryview(array.reshape(-1).view(np.uint8))  # pyright: ignore[reportArgumentType]  # ndarray is a buffer


def _problems(path: Any, problems: list[str], *, restoring: bool) -> JaxvarsValueError:
    action = "restore from" if restoring else "read the checkpoint"
    unchanged = ", no variable was changed" if restoring else ""
    return JaxvarsValueError(
        f"Cannot {action} {os.fspath(path)!r}: {len(problems)} problem(s){unchanged}:\n  "
        + "\n  ".join(problems)
    )
