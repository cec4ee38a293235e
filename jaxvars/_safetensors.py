"""Reading safetensors files (what jv.save writes): the header checked, then values.

The file is an 8-byte little-endian header length, a JSON header giving each
tensor's dtype, shape and byte range, then the raw bytes. Nothing in it is
ever unpickled: reading parses JSON and copies bytes, so a file cannot run
code. Every problem of the header is found before anything is read; a tensor
of a dtype jaxvars cannot represent (``F8_E8M0``, ``F4``, ...) fails only
when it is read.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from ._errors import JaxvarsValueError, Unreadable

DTYPES = {
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
NAMES = {dtype: name for name, dtype in DTYPES.items()}
# safetensors dtypes with no NumPy (or JAX) type here: sub-byte floats, the MX scale.
UNREPRESENTABLE = {"F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"}
_MAX_HEADER = 100 * 2**20  # a header larger than this is a corrupted length field
_MAX_DIMENSIONS = 64  # NumPy's: an entry with more could not be read into an array
METADATA = "__metadata__"  # the header's own entry, never a tensor


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
        raise problems_error(path, [problem], restoring=restoring)
    (length,) = struct.unpack("<Q", raw)
    if length > min(_MAX_HEADER, file_size - 8):
        problem = "the header length is impossible: not a checkpoint, or corrupted"
        raise problems_error(path, [problem], restoring=restoring)
    try:
        # Constants such as Infinity and NaN are not JSON; refusing them keeps
        # every number an int or a plain float.
        header = json.loads(
            f.read(length), parse_constant=_refuse_constant, object_pairs_hook=_unique_keys
        )
    except _RepeatedKey as e:
        problem = f"the header is malformed (corrupted): the key {e.args[0]!r} appears twice"
        raise problems_error(path, [problem], restoring=restoring) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        problem = f"the header is not valid JSON (corrupted): {str(e)[:200]}"
        raise problems_error(path, [problem], restoring=restoring) from None
    if not isinstance(header, dict):
        problem = "the header is not a JSON object (corrupted)"
        raise problems_error(path, [problem], restoring=restoring)
    checksums, problem = _checksums(header)
    problems = [problem] if problem else []
    data_size = file_size - 8 - length
    entries: dict[str, dict[str, Any]] = {}
    ranges = []
    for key, entry in header.items():
        if key == METADATA:
            continue
        if isinstance(entry, dict) and str(entry.get("dtype")) in UNREPRESENTABLE:
            shape = entry.get("shape")
            if isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape):
                # A safetensors dtype jaxvars cannot hold: only reading it fails.
                entries[key] = {"unsupported": entry["dtype"], "shape": shape}
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
    if dtype not in DTYPES:
        return (
            f"dtype {dtype[:40]!r} is not one this version reads (corrupted, or written by a "
            f"newer version; it reads {', '.join(DTYPES)})"
        )
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        return bad + f"its shape {_shown(shape)} is not a list of non-negative integers"
    if len(shape) > _MAX_DIMENSIONS:
        return bad + f"its shape has {len(shape)} dimensions (at most {_MAX_DIMENSIONS})"
    itemsize = DTYPES[dtype].itemsize
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
    if METADATA not in header:
        return {}, None  # a safetensors file from another tool: nothing to check
    metadata = header[METADATA]
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


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype, align: int = 64) -> np.ndarray:
    """An uninitialised array whose data is ``align``-byte aligned (XLA's CPU alignment)."""
    size = math.prod(shape) * dtype.itemsize
    raw = np.empty(size + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start : start + size].view(dtype).reshape(shape)


def checksum(array: np.ndarray) -> int:
    """A wrapping 64-bit sum of the data's words: catches flipped or zeroed bytes
    at memory speed (a CRC would halve restore throughput)."""
    data = array.reshape(-1).view(np.uint8)
    whole = data.size // 8 * 8
    total = data[:whole].view(np.uint64).sum(dtype=np.uint64) if whole else np.uint64(0)
    return int(total) ^ int(data[whole:].sum(dtype=np.uint64)) << 1 ^ data.size


def as_bytes(array: np.ndarray) -> memoryview:
    return memoryview(array.reshape(-1).view(np.uint8))  # pyright: ignore[reportArgumentType]  # ndarray is a buffer


def problems_error(path: Any, problems: list[str], *, restoring: bool) -> JaxvarsValueError:
    action = "restore from" if restoring else "read the checkpoint"
    unchanged = ", no variable was changed" if restoring else ""
    return JaxvarsValueError(
        f"Cannot {action} {os.fspath(path)!r}: {len(problems)} problem(s){unchanged}:\n  "
        + "\n  ".join(problems)
    )


class SafetensorsFile:
    """A safetensors file's keys, and values read (and checksummed) on request."""

    def __init__(self, path: Any, *, restoring: bool) -> None:
        self.path = path
        with open(path, "rb") as f:
            self.header = _read_header(f, path, restoring=restoring)
        self.problems = self.header.problems

    def listing(self) -> dict[str, tuple[tuple[int, ...], Any] | None]:
        """Each key's shape and dtype (a dtype jaxvars cannot hold: its name; None: a
        malformed entry, one of ``problems``)."""
        return {
            key: (tuple(entry["shape"]), entry.get("unsupported") or DTYPES[entry["dtype"]])
            if entry
            else None
            for key, entry in self.header.entries.items()
        }

    def read_many(self, keys: Sequence[str]) -> tuple[dict[str, np.ndarray], list[str]]:
        """The values of ``keys``, and the problems of those that could not be read."""
        entries, checksums = self.header.entries, self.header.checksums
        arrays, sums, problems = {}, {}, []
        # Summing array i on a second thread while array i + 1 is read hides the checksum.
        with (
            open(self.path, "rb") as f,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxvars-checksum") as summer,
        ):
            for key in keys:
                entry = entries[key]
                if "unsupported" in entry:
                    problems.append(unsupported(key, entry["unsupported"]))
                    continue
                begin, end = entry["data_offsets"]
                array = aligned_empty(tuple(entry["shape"]), DTYPES[entry["dtype"]])
                f.seek(self.header.data_start + begin)
                if f.readinto(as_bytes(array)) != end - begin:
                    problems.append(f"{key!r}: the file ends inside its data (truncated)")
                    continue
                if key in checksums:
                    sums[key] = summer.submit(checksum, array)
                arrays[key] = array
            problems += [
                f"{key!r}: its data does not match its checksum (corrupted)"
                for key, total in sums.items()
                if total.result() != checksums[key]
            ]
        return arrays, problems

    def find(self, key: str) -> str | None:
        """``key``, if the file has it."""
        return key if key in self.header.entries else None

    def canonical(self, key: str) -> str:
        """The value ``key`` names (a key is its only name here)."""
        return key

    def read(self, key: str) -> np.ndarray:
        arrays, problems = self.read_many([key])
        if problems:
            raise Unreadable(problems[0])
        return arrays[key]


def unsupported(key: str, dtype: str) -> str:
    return (
        f"{key!r}: dtype {dtype!r} is not one jaxvars can represent (it reads "
        f"{', '.join(DTYPES)}); the file's other keys can be read"
    )
