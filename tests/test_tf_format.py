"""The byte formats under TensorFlow checkpoints (jaxvars/_tf_format.py), piece by piece."""

import struct
from pathlib import Path

import numpy as np
import pytest

import jaxvars as jv
from jaxvars import _crc32c, _tf_format

DATA = Path(__file__).parent / "data" / "tf_checkpoints"
# Written by the real snappy (cramjam.snappy.compress_raw) from the bytes of _plain().
SNAPPY = bytes.fromhex(
    "94321c6a61787661727320fe0800fe08005e0800f41701000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff7461696c6162616261626162616261626162616261626162fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe1200fe12006e1200"
)


def _plain():
    return b"jaxvars " * 20 + bytes(range(256)) + b"tail" + b"ab" * 3000


def test_snappy_decompresses_what_the_real_snappy_compressed():
    assert _tf_format.snappy_decompress(SNAPPY) == _plain()


def test_snappy_refuses_damaged_data():
    with pytest.raises(_tf_format.Damaged, match="reaches before the start"):
        _tf_format.snappy_decompress(bytes([8, 0x15, 0x09]))  # a copy with nothing before it
    with pytest.raises(_tf_format.Damaged, match="wrong length"):
        _tf_format.snappy_decompress(bytes([5, 0x00]) + b"a")  # says 5 bytes, holds 1


def _snappy_literals(data):
    """Valid snappy of nothing but literals (at most 60 bytes each)."""
    out = bytearray()
    value = len(data)
    while True:  # the length as a varint
        out.append(value & 0x7F | (0x80 if value >> 7 else 0))
        value >>= 7
        if not value:
            break
    for i in range(0, len(data), 60):
        chunk = data[i : i + 60]
        out += bytes([(len(chunk) - 1) << 2]) + chunk
    return bytes(out)


def test_a_snappy_compressed_index_block_reads_as_the_plain_one(tmp_path):
    """TF writes uncompressed index blocks, but its reader (and ours) takes snappy ones."""
    source = DATA / "tf1_dtypes" / "model.ckpt.index"
    data = source.read_bytes()
    plain = list(_tf_format.table_items(data))
    footer = data[-48:]
    _, pos = _tf_format.varint(footer, 0)
    _, pos = _tf_format.varint(footer, pos)
    index_offset, pos = _tf_format.varint(footer, pos)
    index_size, _ = _tf_format.varint(footer, pos)
    # The one data block, re-encoded with snappy, then a new index and footer.
    entries = list(_tf_format._entries(data[index_offset : index_offset + index_size]))
    assert len(entries) == 1
    block_offset, pos = _tf_format.varint(entries[0][1], 0)
    block_size, _ = _tf_format.varint(entries[0][1], pos)
    compressed = _snappy_literals(data[block_offset : block_offset + block_size])
    table = bytearray(compressed + b"\x01")
    table += struct.pack("<I", _crc32c.masked(_crc32c.crc32c(bytes(table))))
    handle = bytes([0]) + _varint(len(compressed))
    index = _block([(entries[0][0], handle)])
    index_handle = _varint(len(table)) + _varint(len(index))
    table += index + b"\x00" + struct.pack("<I", _crc32c.masked(_crc32c.crc32c(index + b"\x00")))
    footer = bytes([0, 0]) + index_handle
    table += footer + bytes(40 - len(footer)) + struct.pack("<Q", 0xDB4775248B80FB57)
    assert list(_tf_format.table_items(bytes(table))) == plain
    target = tmp_path / "model.ckpt"
    (tmp_path / "model.ckpt.index").write_bytes(bytes(table))
    (tmp_path / "model.ckpt.data-00000-of-00001").write_bytes(
        (DATA / "tf1_dtypes" / "model.ckpt.data-00000-of-00001").read_bytes()
    )
    assert jv.list_variables(str(target)) == jv.list_variables(DATA / "tf1_dtypes")


def _varint(value):
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value >> 7 else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _block(entries):
    body = bytearray()
    for key, value in entries:
        body += _varint(0) + _varint(len(key)) + _varint(len(value)) + key + value
    return bytes(body) + struct.pack("<I", 0) + struct.pack("<I", 1)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[:-1], "wrong magic number"),
        (lambda data: data[:20], "too short for a table footer"),
        (lambda data: b"\x00" * 10 + data[10:], "checksum does not match"),
    ],
)
def test_a_damaged_table_is_refused(damage, message):
    data = (DATA / "tf1_dtypes" / "model.ckpt.index").read_bytes()
    with pytest.raises(_tf_format.Damaged, match=message):
        list(_tf_format.table_items(damage(data)))


def test_protobuf_fields_and_their_damage():
    message = _varint(1 << 3) + _varint(300) + _varint(2 << 3 | 2) + _varint(3) + b"abc"
    assert _tf_format.fields(message) == {1: [300], 2: [b"abc"]}
    with pytest.raises(_tf_format.Damaged, match="runs past the end"):
        _tf_format.fields(message[:-1])
    with pytest.raises(_tf_format.Damaged, match="wire type 3"):
        _tf_format.fields(_varint(1 << 3 | 3))
    assert _tf_format.signed((1 << 64) - 1) == -1


def test_slice_keys_of_offsets_past_63_use_multi_byte_numbers():
    """TF wrote these keys (tf1_partitioned_large: 300 rows in parts of 100)."""
    assert (
        _tf_format.slice_key("table", [(100, 100), (0, 2)])
        == b"\x00table\x00\x01\x01\x02\xc0d\xc0d\x80\x82"
    )
    assert _tf_format.slice_key("t", [(0, -1)]) == b"\x00t\x00\x01\x01\x01\x80\x7f"
    assert _tf_format._signed_number(-65) == bytes([0x3F, 0xBF])
    table = jv.load_variable(DATA / "tf1_partitioned_large", "table")
    expected = np.load(DATA / "tf1_partitioned_large" / "expected.npz")["table"]
    np.testing.assert_array_equal(table, expected)
