"""CRC-32C (Castagnoli), masked as TensorFlow and LevelDB mask it, for TF checkpoints.

With the optional ``google-crc32c`` package (``pip install jaxvars[tf]``) the
checksum runs at disk speed. Without it, a NumPy fallback: the data is cut
into many equal chunks whose CRCs advance together, one byte of every chunk
per vectorised step, and are then folded pairwise. Folding uses CRC's
linearity: the raw CRC of ``a + b`` is the raw CRC of ``a`` carried over
``len(b)`` zero bytes, XOR the raw CRC of ``b``; carrying over ``n`` zero
bytes is a fixed linear map of the 32 bits, applied to every lane at once
through four byte tables.
"""

from __future__ import annotations

import numpy as np

try:  # at disk speed (C, SSE4.2)
    import google_crc32c as _fast
except ImportError:  # pragma: no cover - depends on what is installed
    _fast = None

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_MAX_LANES = 1 << 14  # chunks the fallback advances together
_SMALL = 1 << 12  # below this many bytes the fallback runs byte by byte


def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1)
    return table.astype(np.uint32)


_TABLE = _byte_table()
_TABLE_LIST: list[int] = _TABLE.tolist()
# The map "one zero byte" of a register r (r -> TABLE[r & 0xFF] ^ r >> 8) is linear:
# as the images of the 32 unit registers.
_ONE_ZERO = [_TABLE_LIST[(1 << b) & 0xFF] ^ ((1 << b) >> 8) for b in range(32)]
_BITS = (np.arange(256)[:, None] >> np.arange(8)) & 1  # bit j of each byte value


def _raw_bytewise(data: bytes | memoryview, register: int) -> int:
    """The CRC register after ``data``, from ``register`` (no final inversion)."""
    table = _TABLE_LIST
    for byte in bytes(data):
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def _apply(images: list[int], register: int) -> int:
    """A linear map (the images of the unit registers) applied to ``register``."""
    out, bit = 0, 0
    while register:
        if register & 1:
            out ^= images[bit]
        register >>= 1
        bit += 1
    return out


def _squared(images: list[int]) -> list[int]:
    return [_apply(images, image) for image in images]


def _zeros(n: int) -> list[int]:
    """The map "``n`` zero bytes", by squaring the one-byte map."""
    result, power = [1 << b for b in range(32)], _ONE_ZERO
    while n:
        if n & 1:
            result = [_apply(power, image) for image in result]
        power = _squared(power)
        n >>= 1
    return result


def _apply_to_all(images: list[int], registers: np.ndarray) -> np.ndarray:
    """The map applied to every register at once, through one table per byte."""
    columns = np.array(images, dtype=np.uint32).reshape(4, 8)
    out = np.zeros_like(registers)
    for k in range(4):
        table = np.bitwise_xor.reduce(np.where(_BITS == 1, columns[k], np.uint32(0)), axis=1)
        out ^= table.astype(np.uint32)[(registers >> np.uint32(8 * k)) & 0xFF]
    return out


def _raw_numpy(data: np.ndarray) -> int:
    """The raw CRC (register from 0, no inversion) of ``data`` (uint8), vectorised."""
    lanes = min(_MAX_LANES, 1 << max(0, (len(data) // 64).bit_length() - 1))
    chunk = len(data) // lanes
    columns = data[: chunk * lanes].reshape(lanes, chunk)
    registers = np.zeros(lanes, dtype=np.uint32)
    shift = np.uint32(8)
    for i in range(chunk):
        registers = _TABLE[(registers ^ columns[:, i]) & 0xFF] ^ (registers >> shift)
    carry = _zeros(chunk)
    while len(registers) > 1:  # fold neighbours: (a, b) -> a carried over len(b) ^ b
        registers = _apply_to_all(carry, registers[0::2]) ^ registers[1::2]
        carry = _squared(carry)
    return _raw_bytewise(data[chunk * lanes :].tobytes(), int(registers[0]))


def crc32c(data: bytes | bytearray | memoryview | np.ndarray) -> int:
    """The CRC-32C of ``data`` (a bytes-like object or a C-contiguous array)."""
    array = np.frombuffer(data, dtype=np.uint8)  # no copy
    if _fast is not None:
        return int(_fast.value(array))
    if len(array) < _SMALL:
        return _raw_bytewise(array.tobytes(), 0xFFFFFFFF) ^ 0xFFFFFFFF
    # From 0xFFFFFFFF, the register is the raw CRC XOR 0xFFFFFFFF carried over the data.
    start = _apply(_zeros(len(array)), 0xFFFFFFFF)
    return start ^ _raw_numpy(array) ^ 0xFFFFFFFF


def masked(crc: int) -> int:
    """TensorFlow's (and LevelDB's) mask of a stored CRC: rotate right by 15, add a constant."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def fast() -> bool:
    """Whether checksums run at disk speed (``google-crc32c`` is installed)."""
    return _fast is not None
