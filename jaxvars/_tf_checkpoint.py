"""TensorFlow checkpoints (TensorBundle), read without TensorFlow.

A checkpoint is a prefix: ``<prefix>.index``, an SSTable mapping each key to
a ``BundleEntryProto`` (dtype, shape, which data shard, offset, size, the
masked CRC-32C of the bytes, and for a partitioned variable its slices), and
``<prefix>.data-NNNNN-of-NNNNN``, the raw little-endian bytes. TF2 adds the
object graph (``_CHECKPOINTABLE_OBJECT_GRAPH``, a ``TrackableObjectGraph``).

Keys are listed as users know them: TF1 names as they are; TF2 object paths
without ``/.ATTRIBUTES/VARIABLE_VALUE``, and a variable keyed through another
object (Keras 3 keys model weights as ``optimizer/_trainable_variables/N``)
also under its path through the first of the root's children that reaches it
(``model/...``). The object graph and the slices of partitioned variables are
not variables and are not listed.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from typing import Any

import ml_dtypes
import numpy as np

from ._crc32c import crc32c, masked
from ._errors import Unreadable
from ._safetensors import aligned_empty
from ._tf_format import Damaged, fields, signed, slice_key, table_items, varint

OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_STRING = 7  # DT_STRING
# TensorFlow's DataType enum (types.proto); reference types (+100) store their base.
_DTYPES = {
    1: np.dtype(np.float32),
    2: np.dtype(np.float64),
    3: np.dtype(np.int32),
    4: np.dtype(np.uint8),
    5: np.dtype(np.int16),
    6: np.dtype(np.int8),
    _STRING: np.dtype(object),
    8: np.dtype(np.complex64),
    9: np.dtype(np.int64),
    10: np.dtype(np.bool_),
    14: np.dtype(ml_dtypes.bfloat16),
    17: np.dtype(np.uint16),
    18: np.dtype(np.complex128),
    19: np.dtype(np.float16),
    22: np.dtype(np.uint32),
    23: np.dtype(np.uint64),
    24: np.dtype(ml_dtypes.float8_e5m2),
    25: np.dtype(ml_dtypes.float8_e4m3fn),
}


def prefix_of(path: str | os.PathLike[str]) -> str | None:
    """The checkpoint prefix ``path`` names, if any: itself, a directory's latest, or
    the prefix of one of its files (``.index``, ``.data-00000-of-00001``)."""
    path = os.fsdecode(path)
    if os.path.isdir(path):
        return latest_checkpoint(path)
    path = re.sub(r"\.(index|data-\d{5}-of-\d{5})$", "", path)
    return path if os.path.isfile(path + ".index") else None


def latest_checkpoint(directory: str | os.PathLike[str]) -> str | None:
    """The checkpoint prefix TF's ``checkpoint`` state file in ``directory`` names
    (its ``model_checkpoint_path``), or None without one, as
    ``tf.train.latest_checkpoint`` returns (None too when that checkpoint's
    index is gone). A relative prefix is joined to ``directory``.

    Example:
        >>> import os, tempfile, jaxvars as jv
        >>> directory = tempfile.mkdtemp()
        >>> print(jv.latest_checkpoint(directory))
        None
        >>> with open(os.path.join(directory, "checkpoint"), "w") as f:
        ...     _ = f.write('model_checkpoint_path: "ckpt-3"')
        >>> open(os.path.join(directory, "ckpt-3.index"), "wb").close()
        >>> os.path.basename(jv.latest_checkpoint(directory))
        'ckpt-3'
    """
    directory = os.fsdecode(directory)
    try:
        with open(os.path.join(directory, "checkpoint"), "rb") as f:
            text = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    # A text-format CheckpointState: `model_checkpoint_path: "..."` (or '...').
    quoted = rb"""(["'])((?:(?!\1)[^\\]|\\.)*)\1"""
    found = re.search(rb"^\s*model_checkpoint_path\s*:\s*" + quoted, text, re.MULTILINE)
    if found is None:
        return None
    prefix = os.fsdecode(_unescaped(found.group(2)))
    prefix = prefix if os.path.isabs(prefix) else os.path.join(directory, prefix)
    return prefix if os.path.isfile(prefix + ".index") else None


_ESCAPES = {b"n": b"\n", b"t": b"\t", b"r": b"\r", b"\\": b"\\", b'"': b'"', b"'": b"'"}


def _unescaped(text: bytes) -> bytes:
    """A protobuf text-format string's bytes: C escapes, octal and hex, over raw UTF-8."""

    def one(match: re.Match[bytes]) -> bytes:
        escape = match.group(1)
        if escape[:1] in b"01234567":
            return bytes([int(escape, 8) & 0xFF])
        if escape[:1] == b"x":
            return bytes([int(escape[1:], 16)])
        return _ESCAPES.get(escape, escape)

    return re.sub(rb"\\([0-7]{1,3}|x[0-9a-fA-F]{1,2}|.)", one, text)


class Entry:
    """One key of the index: where its bytes are, or the slices that make it up."""

    __slots__ = ("dtype", "shape", "shard", "offset", "size", "crc", "slices")

    def __init__(self, message: bytes) -> None:
        parsed = fields(message)
        kind = _one(parsed, 1, 0)
        kind = kind - 100 if kind > 100 else kind
        if kind not in _DTYPES:
            raise Damaged(f"TensorFlow dtype {kind} (DataType enum), which has no NumPy type")
        self.dtype = _DTYPES[kind]
        self.shape = _shape(_one(parsed, 2, b""))
        self.shard, self.offset = _one(parsed, 3, 0), _one(parsed, 4, 0)
        self.size, self.crc = _one(parsed, 5, 0), parsed.get(6, [None])[0]
        self.slices = [_extents(s) for s in parsed.get(7, [])]  # type: ignore[arg-type]


class TFCheckpoint:
    """A TensorFlow checkpoint's keys, and each value read and checked on request."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        try:
            with open(prefix + ".index", "rb") as f:
                items = list(table_items(f.read()))
            header = fields(items[0][1]) if items and items[0][0] == b"" else None
            if header is None:
                raise Damaged("the index has no header entry")
            self.shards = _one(header, 1, 1)
            if _one(header, 2, 0) != 0:
                raise Damaged("a big-endian checkpoint (only little-endian ones are read)")
            self.entries = {key: Entry(value) for key, value in items[1:]}
        except Damaged as e:
            raise Unreadable(f"its index is damaged: {e}") from None
        except FileNotFoundError:
            raise Unreadable("its .index file is missing") from None
        self.problems: list[str] = []
        self.names = self._names()

    def listing(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Every listed key's shape and dtype."""
        entries = self.entries
        return {name: (entries[key].shape, entries[key].dtype) for name, key in self.names.items()}

    def read_many(self, names: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
        """The values of ``names``, and the problems of those that could not be read."""
        arrays, problems = {}, []
        for name in names:
            try:
                arrays[name] = self.read(name)
            except Unreadable as e:
                problems.append(str(e))
        return arrays, problems

    def find(self, name: str) -> str | None:
        """The listed key ``name`` is, also given as TF spells it (with
        ``/.ATTRIBUTES/VARIABLE_VALUE``, as ``tf.train.list_variables`` shows it)."""
        if name in self.names:
            return name
        short = name.removesuffix(_SUFFIX)
        return short if short in self.names else None

    def canonical(self, name: str) -> bytes:
        """The index key ``name`` lists (an alias and its path name one value)."""
        return self.names[name]

    def read(self, name: str) -> np.ndarray:
        """The value of listed key ``name``, its checksum verified."""
        key = self.names[name]
        entry = self.entries[key]
        if not entry.slices:
            return self._value(name, entry)
        whole = np.empty(entry.shape, entry.dtype)
        covered = np.zeros(entry.shape, np.bool_)  # each element from exactly one slice
        for extents in entry.slices:
            part = self.entries.get(slice_key(key.decode(), extents))
            if part is None:
                raise Unreadable(f"{name!r}: a slice of it is missing from the index (damaged)")
            region = tuple(
                slice(None) if length == -1 else slice(start, start + length)
                for start, length in extents
            )
            if covered[region].any() or covered[region].shape != part.shape:
                raise Unreadable(f"{name!r}: its slices overlap or do not fit it (damaged)")
            whole[region] = self._value(name, part)
            covered[region] = True
        if not covered.all():
            raise Unreadable(
                f"{name!r}: its slices cover {int(covered.sum())} of its {covered.size} "
                "elements (saved without all its partitions, or damaged)"
            )
        return whole

    def _value(self, name: str, entry: Entry) -> np.ndarray:
        data = self._bytes(name, entry)
        if entry.dtype == object:
            value, checked = _strings(data.tobytes(), entry.shape)
            if value is None:
                raise Unreadable(f"{name!r}: its strings are damaged")
        else:
            value, checked = data, data
            if len(data) != math.prod(entry.shape) * entry.dtype.itemsize:
                raise Unreadable(f"{name!r}: its size does not match its shape and dtype (damaged)")
        if entry.crc is not None and masked(crc32c(checked)) != entry.crc:
            raise Unreadable(f"{name!r}: its data does not match its checksum (corrupted)")
        return value if entry.dtype == object else data.view(entry.dtype).reshape(entry.shape)

    def _bytes(self, name: str, entry: Entry) -> np.ndarray:
        shard = f"{self.prefix}.data-{entry.shard:05d}-of-{self.shards:05d}"
        try:
            with open(shard, "rb") as f:
                f.seek(entry.offset)
                data = aligned_empty((entry.size,), np.dtype(np.uint8))
                read = f.readinto(data)  # pyright: ignore[reportArgumentType]  # a buffer
        except FileNotFoundError:
            raise Unreadable(f"its data shard {os.path.basename(shard)!r} is missing") from None
        if read != entry.size:
            raise Unreadable(f"{name!r}: the data shard ends inside its bytes (truncated)")
        return data

    def _names(self) -> dict[str, bytes]:
        """Listed key -> index key: variables only, TF2 paths shortened, aliases added."""
        names = {}
        for key in self.entries:
            if key.startswith(b"\x00") or key == OBJECT_GRAPH.encode():
                continue  # a slice of a partitioned variable, or the object graph
            text = key.decode("utf-8", "replace")
            names[text[: -len(_SUFFIX)] if text.endswith(_SUFFIX) else text] = key
        graph = self.entries.get(OBJECT_GRAPH.encode())
        if graph is not None:
            value = self._value(OBJECT_GRAPH, graph)
            for alias, key in _aliases(value.reshape(-1)[0] if value.size else b"").items():
                if key.encode() in self.entries:
                    names.setdefault(alias, key.encode())
        return names


def _aliases(graph: bytes) -> dict[str, str]:
    """Object paths through the root's first child reaching each variable that the
    checkpoint keys through another child (TrackableObjectGraph: nodes = 1;
    TrackableObject: children = 1 (node_id = 1, local_name = 2), attributes = 2
    (name = 1, checkpoint_key = 3))."""
    nodes = [fields(node) for node in fields(graph).get(1, [])]  # type: ignore[arg-type]
    children = [
        [(_one(fields(c), 1, 0), _one(fields(c), 2, b"").decode()) for c in node.get(1, [])]  # type: ignore[arg-type]
        for node in nodes
    ]
    first_path: dict[int, str] = {}
    for node_id, name in children[0] if children else []:
        for found, path in _walk(children, node_id, name):
            first_path.setdefault(found, path)
    aliases = {}
    for node_id, node in enumerate(nodes):
        for attribute in node.get(2, []):
            parsed = fields(attribute)  # type: ignore[arg-type]
            key = _one(parsed, 3, b"").decode()
            path = first_path.get(node_id)
            is_value = _one(parsed, 1, b"") == b"VARIABLE_VALUE" and key.endswith(_SUFFIX)
            if not is_value or path is None:
                continue
            if path.split("/")[0] != key.split("/")[0]:
                aliases[path] = key
    return aliases


def _walk(
    children: list[list[tuple[int, str]]], start: int, name: str
) -> Iterator[tuple[int, str]]:
    """Breadth first from ``start``: each node once, with its shortest path."""
    seen, queue = {start}, [(start, name)]
    while queue:
        node, path = queue.pop(0)
        yield node, path
        for child, local in children[node] if node < len(children) else []:
            if child not in seen:
                seen.add(child)
                queue.append((child, f"{path}/{local}"))


def _one(parsed: dict[int, list[Any]], number: int, default: Any) -> Any:
    values = parsed.get(number)
    return default if not values else values[-1]  # protobuf: the last one wins


def _shape(message: bytes) -> tuple[int, ...]:
    """A TensorShapeProto: dim = 2 (size = 1)."""
    return tuple(signed(_one(fields(dim), 1, 0)) for dim in fields(message).get(2, []))  # type: ignore[arg-type]


def _extents(message: bytes) -> list[tuple[int, int]]:
    """A TensorSliceProto: extent = 1 (start = 1, length = 2; no length: all of it)."""
    out = []
    for extent in fields(message).get(1, []):
        parsed = fields(extent)  # type: ignore[arg-type]
        out.append((signed(_one(parsed, 1, 0)), signed(_one(parsed, 2, -1 % (1 << 64)))))
    return out


def _strings(raw: bytes, shape: tuple[int, ...]) -> tuple[np.ndarray | None, bytes]:
    """A string tensor (a varint length per element, a masked CRC of the lengths, the
    bytes), and the bytes its checksum covers: TF sums each length as a little-endian
    uint32 (uint64 above 2**32 - 1), then the lengths' CRC, then the bytes."""
    count = math.prod(shape)
    lengths, pos = [], 0
    try:
        for _ in range(count):
            length, pos = varint(raw, pos)
            lengths.append(length)
    except Damaged:
        return None, b""
    covered = b"".join(n.to_bytes(4 if n < 1 << 32 else 8, "little") for n in lengths)
    covered += raw[pos : pos + 4]
    pos += 4
    out = np.empty(count, dtype=object)
    for i, length in enumerate(lengths):
        out[i] = raw[pos : pos + length]
        pos += length
    if pos != len(raw):
        return None, b""
    return out.reshape(shape), covered + raw[pos - sum(lengths) :]
