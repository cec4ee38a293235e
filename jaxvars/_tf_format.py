"""The byte formats under a TensorFlow checkpoint, read without TensorFlow or protobuf.

- **Protocol buffers' wire format** (``fields``): a message as ``{field number:
  [values]}``, varints as ints, length-delimited fields as bytes (nested
  messages are parsed again by whoever knows their schema).
- **The SSTable** of the ``.index`` file (``table_items``), LevelDB's table
  format as TensorFlow's ``core/lib/io/`` writes it: a 48-byte footer giving
  the index block's handle, blocks of prefix-compressed entries with restart
  points, each followed by a type byte (0 raw, 1 snappy) and a masked CRC-32C.
- **Snappy** (``snappy_decompress``): literals and back-references; index
  blocks are small, so plain Python is fast enough.
- **OrderedCode** (``slice_key``): the keys TensorFlow gives the slices of a
  partitioned variable (``EncodeTensorNameSlice``).

Every reader raises ``Damaged`` on bytes that do not parse; the caller names
the file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

from ._crc32c import crc32c, masked

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48  # two block handles padded to 40 bytes, then the magic
_TRAILER = 5  # a block's type byte and masked CRC-32C


class Damaged(Exception):
    """Bytes that do not parse as the format they should have."""


def varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """The unsigned varint at ``pos``, and the position after it."""
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise Damaged("a varint runs past the end")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(message: bytes | memoryview) -> dict[int, list[int | bytes]]:
    """A protobuf message's fields (wire types 0, 1, 2 and 5), by field number."""
    out: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(message):
        tag, pos = varint(message, pos)
        number, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = varint(message, pos)
        elif wire == 1:
            value, pos = int.from_bytes(message[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = varint(message, pos)
            value, pos = bytes(message[pos : pos + size]), pos + size
        elif wire == 5:
            value, pos = int.from_bytes(message[pos : pos + 4], "little"), pos + 4
        else:
            raise Damaged(f"protobuf wire type {wire}")
        if pos > len(message):
            raise Damaged("a protobuf field runs past the end")
        out.setdefault(number, []).append(value)
    return out


def signed(value: int) -> int:
    """A varint read as a two's-complement int64 (protobuf's int32 and int64 fields)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def snappy_decompress(data: bytes) -> bytes:
    """Snappy's raw format: the uncompressed length, then literals and copies."""
    size, pos = varint(data, 0)
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # a literal: its length - 1 in the tag, or in 1-4 following bytes
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                length = int.from_bytes(data[pos : pos + extra], "little")
                pos += extra
            length += 1
            out += data[pos : pos + length]
            pos += length
            continue
        if kind == 1:
            length, offset = 4 + ((tag >> 2) & 7), ((tag >> 5) << 8) | data[pos]
            pos += 1
        elif kind == 2:
            length, offset = (tag >> 2) + 1, int.from_bytes(data[pos : pos + 2], "little")
            pos += 2
        else:
            length, offset = (tag >> 2) + 1, int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        if not 0 < offset <= len(out):
            raise Damaged("a snappy copy reaches before the start")
        for _ in range(length):  # may overlap itself (a run)
            out.append(out[-offset])
    if len(out) != size:
        raise Damaged("snappy data of the wrong length")
    return bytes(out)


def _block(data: bytes, handle: bytes | memoryview) -> bytes:
    """The contents of the block at ``handle`` (offset and size varints), checked."""
    offset, pos = varint(handle, 0)
    size, _ = varint(handle, pos)
    end = offset + size
    if end + _TRAILER > len(data):
        raise Damaged("a block runs past the end of the file")
    contents, kind = data[offset:end], data[end]
    (stored,) = struct.unpack("<I", data[end + 1 : end + _TRAILER])
    if masked(crc32c(data[offset : end + 1])) != stored:
        raise Damaged("a block's checksum does not match (corrupted)")
    if kind == 1:
        return snappy_decompress(contents)
    if kind != 0:
        raise Damaged(f"unknown block compression {kind}")
    return contents


def _entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """A block's key/value pairs; keys share prefixes with the key before."""
    if len(block) < 4:
        raise Damaged("a block too short for its restart count")
    (restarts,) = struct.unpack("<I", block[-4:])
    end = len(block) - 4 * (restarts + 1)
    if end < 0:
        raise Damaged("a block's restart points run past its start")
    key, pos = b"", 0
    while pos < end:
        shared, pos = varint(block, pos)
        unshared, pos = varint(block, pos)
        size, pos = varint(block, pos)
        if shared > len(key) or pos + unshared + size > end:
            raise Damaged("a block entry runs past its block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + size]
        pos += size


def table_items(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every key/value pair of an SSTable (the whole file's bytes), in key order."""
    if len(data) < _FOOTER:
        raise Damaged("too short for a table footer")
    footer = data[-_FOOTER:]
    (magic,) = struct.unpack("<Q", footer[-8:])
    if magic != _TABLE_MAGIC:
        raise Damaged("not a table (wrong magic number)")
    _, pos = varint(footer, 0)  # the metaindex block's handle: unused
    _, pos = varint(footer, pos)
    index_start = pos
    for _, handle in _entries(_block(data, footer[index_start:])):
        yield from _entries(_block(data, handle))


# -- OrderedCode, for the keys of a partitioned variable's slices --------------------------------


def _number(value: int) -> bytes:
    """``OrderedCode::WriteNumIncreasing``: a length byte, then big-endian bytes."""
    body = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return bytes([len(body)]) + body


def _string(value: bytes) -> bytes:
    """``OrderedCode::WriteString``: 0x00 and 0xFF escaped, then a 0x00 0x01 terminator."""
    escaped = bytearray()
    for byte in value:
        escaped += b"\x00\xff" if byte == 0 else b"\xff\x00" if byte == 0xFF else bytes([byte])
    return bytes(escaped) + b"\x00\x01"


def _signed_number(value: int) -> bytes:
    """``OrderedCode::WriteSignedNumIncreasing``: the length in the leading bits."""
    magnitude = ~value if value < 0 else value
    length = magnitude.bit_length() // 7 + 1
    encoded = bytearray(value.to_bytes(10, "big", signed=True)[10 - length :])
    header = (0xFF00 >> length) & 0xFF if length <= 8 else 0xFF  # `length` leading ones
    encoded[0] ^= header
    if length > 8:
        encoded[1] ^= (0xFF00 >> (length - 8)) & 0xFF
    return bytes(encoded)


def slice_key(name: str, extents: Sequence[tuple[int, int]]) -> bytes:
    """The index key of one slice (start, length per dimension; -1 length: all)."""
    key = _number(0) + _string(name.encode()) + _number(len(extents))
    for start, length in extents:
        key += _signed_number(start) + _signed_number(length)
    return key
