"""jv.save files are safetensors files, both ways, with the real ``safetensors`` package
(API.md section 13)."""

import json
import struct

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import jaxvars as jv

ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2}
ITEMSIZE |= {"I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}


def header(path):
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), 8 + length


def variables():
    return {
        "a/bool": jv.Variable(np.array([True, False, True])),
        "b/u8": jv.Variable(np.arange(5, dtype=np.uint8)),
        "c/f16": jv.Variable(np.array([1.5, -2.0, 3.0], np.float16)),
        "d/i32": jv.Variable(np.array([-7, 8, 9], np.int32)),
        "e/f32": jv.Variable(np.linspace(0, 1, 7, dtype=np.float32).reshape(7, 1)),
        "f/c64": jv.Variable(np.array([1 + 2j], np.complex64)),
        "g/scalar": jv.Variable(np.float32(2.5)),
        "h/bf16": jv.Variable(jnp.array([1.0, 2.0, 3.0], jnp.bfloat16)),
    }


def test_every_tensor_is_aligned_to_its_dtypes_size(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    jv.save(path, variables())
    entries, data_start = header(path)
    assert data_start % 8 == 0
    for key, entry in entries.items():
        if key == "__metadata__":
            continue
        begin = entry["data_offsets"][0]
        assert (data_start + begin) % ITEMSIZE[entry["dtype"]] == 0, (key, entry)


def test_our_files_load_bit_exact_with_safetensors_numpy(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    saved = {k: v for k, v in variables().items() if k != "h/bf16"}  # NumPy has no bfloat16
    jv.save(path, saved)
    loaded = load_file(path)
    assert set(loaded) == set(saved)
    for key, variable in saved.items():
        want = np.asarray(variable.value)
        assert loaded[key].dtype == want.dtype and loaded[key].shape == want.shape, key
        assert loaded[key].tobytes() == want.tobytes(), key


def test_files_safetensors_writes_restore_and_load(tmp_path):
    path = tmp_path / "from_numpy.safetensors"
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "step": np.array(4, np.int32)}
    save_file(tensors, path)
    w = jv.Variable(np.zeros((2, 3), np.float32), name="w")
    step = jv.Variable(np.int32(0), name="step")
    jv.restore(path, [w, step])
    np.testing.assert_array_equal(w.value, tensors["w"])
    assert int(step.value) == 4
    assert jv.list_variables(path) == [
        ("step", (), np.dtype(np.int32)),
        ("w", (2, 3), np.dtype(np.float32)),
    ]
    np.testing.assert_array_equal(jv.load_variable(path, "w"), tensors["w"])


def write_raw(path, entries, data):
    encoded = json.dumps(entries).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)


@pytest.mark.parametrize("dtype", ["F8_E8M0", "F4", "F6_E2M3"])
def test_a_dtype_jaxvars_cannot_represent_fails_only_for_its_key(tmp_path, dtype):
    path = tmp_path / "mixed.safetensors"
    w = np.array([1.0, 2.0], np.float32)
    entries = {
        "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "scales": {"dtype": dtype, "shape": [4], "data_offsets": [8, 12]},
    }
    write_raw(path, entries, w.tobytes() + bytes(4))
    assert jv.list_variables(path) == [("scales", (4,), dtype), ("w", (2,), np.dtype(np.float32))]
    target = jv.Variable(np.zeros(2, np.float32), name="w")
    jv.restore(path, [target])  # strict: a key that could never be restored is no error
    np.testing.assert_array_equal(target.value, w)
    np.testing.assert_array_equal(jv.load_variable(path, "w"), w)
    with pytest.raises(
        ValueError, match=rf"'scales': dtype '{dtype}' is not one jaxvars can represent"
    ):
        jv.load_variable(path, "scales")
    scales = jv.Variable(np.zeros(4, np.float32), name="scales")
    with pytest.raises(
        ValueError, match=rf"(?s)no variable was changed.*'scales': dtype '{dtype}'"
    ):
        jv.restore(path, [target, scales])
    assert scales.value.tolist() == [0.0] * 4


def test_a_pytorch_linear_weight_restores_into_a_kernel_with_a_transform(tmp_path):
    """A PyTorch / Hugging Face layout: `fc.weight` (out, in), `fc.bias`."""
    path = tmp_path / "model.safetensors"
    weight = np.arange(6, dtype=np.float32).reshape(3, 2)  # (out=3, in=2)
    save_file({"fc.weight": weight, "fc.bias": np.ones(3, np.float32)}, path)

    class Dense(jv.Module):
        def __init__(self):
            super().__init__()
            self.kernel = jv.Variable(np.zeros((2, 3), np.float32), name="kernel")  # (in, out)
            self.bias = jv.Variable(np.zeros(3, np.float32), name="bias")

    model = Dense()

    def torch_key(key):
        return ("fc.weight", np.transpose) if key == "kernel" else "fc." + key

    jv.restore(path, model, map=torch_key)
    np.testing.assert_array_equal(model.kernel.value, weight.T)
    assert model.bias.value.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(
        ValueError, match=r"'fc.weight' \(for 'kernel', transformed\): shape \(3, 2\)"
    ):
        jv.restore(
            path,
            model,
            map=lambda key: ("fc.weight", lambda a: a) if key == "kernel" else "fc." + key,
        )
    with pytest.raises(
        TypeError, match=r"returns a file key, None, or a \(file key, transform\) pair"
    ):
        jv.restore(path, model, map=lambda key: 3)
    jv.restore(path, model, strict=False, map=lambda key: None if key == "kernel" else "fc." + key)


def test_bfloat16_round_trips(tmp_path):
    path = tmp_path / "bf16.safetensors"
    v = jv.Variable(jnp.array([1.0, -2.5], jnp.bfloat16), name="v")
    jv.save(path, [v])
    loaded = jv.load_variable(path, "v")
    assert loaded.dtype == ml_dtypes.bfloat16 and loaded.tolist() == [1.0, -2.5]


def test_an_unknown_dtype_name_is_a_corrupted_header_not_an_unsupported_dtype(tmp_path):
    path = tmp_path / "typo.safetensors"
    write_raw(path, {"w": {"dtype": "f32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8))
    with pytest.raises(ValueError, match=r"'w': dtype 'f32' is not one this version reads"):
        jv.list_variables(path)
