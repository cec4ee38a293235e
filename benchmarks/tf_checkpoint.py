"""Restoring a TensorFlow checkpoint of 256 MiB: jv.restore against np.fromfile of its bytes.

The checkpoint (64 float32 matrices of 1024 x 1024) is written once to a
temporary directory by a small TensorBundle writer below, in the format
TensorFlow writes (an SSTable index of BundleEntryProtos with masked CRC-32Cs,
one data shard); the tests check the reader against checkpoints TensorFlow
itself wrote. jv.restore reads every value, verifies its checksum, and assigns
it to a variable; the baseline only reads the data file into memory with
np.fromfile. Both read from the page cache (each is run once before timing).
Medians of interleaved runs; then the same restore with the NumPy checksum
fallback (no google-crc32c).

Run: pip install -e ".[bench,tf]" && python benchmarks/tf_checkpoint.py [--quick]
Target: jv.restore <= 1.5x np.fromfile with google-crc32c.
"""

from __future__ import annotations

import os
import statistics
import struct
import sys
import tempfile
import time

import numpy as np

import jaxvars as jv
from jaxvars import _crc32c

COUNT, SIDE = 64, 1024  # 256 MiB of float32


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3) + _varint(value)


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    """An SSTable block with a restart point at every entry (no shared prefixes)."""
    body, restarts = bytearray(), []
    for key, value in entries:
        restarts.append(len(body))
        body += _varint(0) + _varint(len(key)) + _varint(len(value)) + key + value
    body += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(body)


def write_checkpoint(prefix: str, arrays: dict[str, np.ndarray]) -> None:
    """A one-shard TensorBundle checkpoint of float32 ``arrays``."""
    entries, offset = [], 0
    with open(prefix + ".data-00000-of-00001", "wb") as data:
        for key in sorted(arrays):
            raw = np.ascontiguousarray(arrays[key]).tobytes()
            data.write(raw)
            shape = b"".join(_field(2, _field(1, d)) for d in arrays[key].shape)
            crc = struct.pack("<I", _crc32c.masked(_crc32c.crc32c(raw)))
            entry = _field(1, 1) + _field(2, shape) + _field(4, offset) + _field(5, len(raw))
            entries.append((key.encode(), entry + _varint(6 << 3 | 5) + crc))
            offset += len(raw)
    header = (b"", _field(1, 1) + _field(3, _field(1, 1)))
    table = bytearray()

    def add(block: bytes) -> bytes:  # the block, its trailer; returns its handle
        handle = _varint(len(table)) + _varint(len(block))
        crc = _crc32c.masked(_crc32c.crc32c(block + b"\x00"))
        table.extend(block + b"\x00" + struct.pack("<I", crc))
        return handle

    data_handle = add(_block([header, *entries]))
    metaindex = add(_block([]))
    index = add(_block([(entries[-1][0] + b"\xff", data_handle)]))
    footer = metaindex + index
    table += footer + bytes(40 - len(footer)) + struct.pack("<Q", 0xDB4775248B80FB57)
    with open(prefix + ".index", "wb") as f:
        f.write(table)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    rounds = 3 if "--quick" in sys.argv else 7
    rng = np.random.default_rng(0)
    arrays = {
        f"layer_{i:02d}/kernel": rng.standard_normal((SIDE, SIDE), np.float32) for i in range(COUNT)
    }
    directory = tempfile.mkdtemp()
    prefix = os.path.join(directory, "model.ckpt-1")
    write_checkpoint(prefix, arrays)
    size = os.path.getsize(prefix + ".data-00000-of-00001")
    variables = [
        jv.Variable(np.zeros((SIDE, SIDE), np.float32), name=key) for key in sorted(arrays)
    ]
    del arrays

    def read_bytes() -> None:
        np.fromfile(prefix + ".data-00000-of-00001", dtype=np.float32)

    def restore() -> None:
        jv.restore(prefix, variables)

    contenders = {"np.fromfile of the data file": read_bytes, "jv.restore (google-crc32c)": restore}
    if not _crc32c.fast():
        del contenders["jv.restore (google-crc32c)"]
        print("google-crc32c is not installed: pip install jaxvars[tf]")
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        fn()  # into the page cache, and warm
    for _ in range(rounds):
        for name, fn in contenders.items():
            times[name].append(_timed(fn))
    fast, _crc32c._fast = _crc32c._fast, None
    try:
        fallback = statistics.median(_timed(restore) for _ in range(max(1, rounds // 3)))
    finally:
        _crc32c._fast = fast
    base = statistics.median(times["np.fromfile of the data file"])
    print(f"\nRestoring {COUNT} variables, {size / 2**20:.0f} MiB, from a TensorFlow checkpoint")
    rows = {name: statistics.median(samples) for name, samples in times.items()}
    rows["jv.restore (NumPy CRC fallback)"] = fallback
    for name, median in rows.items():
        rate = size / 2**20 / median
        print(f"  {name:<34} {median:7.3f} s  {rate:7.0f} MiB/s  {median / base:5.2f}x")


if __name__ == "__main__":
    main()
