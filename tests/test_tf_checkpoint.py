"""TensorFlow checkpoints read without TensorFlow (API.md section 13).

The fixtures in tests/data/tf_checkpoints were written by TensorFlow 2.21
(the project's shared fixtures, and ``tf2_more`` by tools/make_tf_fixtures.py);
``expected.json`` and ``expected.npz`` hold what TF's own reader returns for
every key (strings as hex in the JSON).
"""

import json
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jaxvars as jv
from jaxvars import _crc32c

DATA = Path(__file__).parent / "data" / "tf_checkpoints"
CASES = ["tf1_convnet", "tf1_dtypes", "tf1_sharded_partitioned", "tf2_keras_adam", "tf2_more"]
SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def expected(case):
    """{listed key: (shape, dtype, value)} as TF reads them."""
    described = json.loads((DATA / case / "expected.json").read_text())
    values = np.load(DATA / case / "expected.npz")
    out = {}
    for key, info in described["keys"].items():
        if "hex" in info:
            strings = [bytes.fromhex(h) for h in info["hex"]]
            value = np.array(strings, dtype=object).reshape(info["shape"])
        elif "npz" not in info:
            continue  # the object graph: not a variable
        else:
            value = values[info["npz"]]
        if info["dtype"] == "bfloat16":
            value = value.view(ml_dtypes.bfloat16)
        out[key.removesuffix(SUFFIX)] = (tuple(info["shape"]), value.dtype, value)
    return out


@pytest.fixture(params=[True, False], ids=["google-crc32c", "numpy-fallback"])
def checksums(request, monkeypatch):
    if not request.param:
        monkeypatch.setattr(_crc32c, "_fast", None)
    return request.param


@pytest.mark.parametrize("case", CASES)
def test_every_value_is_what_tensorflow_reads(case, checksums):
    directory = DATA / case
    listing = {key: (shape, dtype) for key, shape, dtype in jv.list_variables(directory)}
    want = expected(case)
    aliases = {"model/_functional/_operations/1/_kernel", "model/_functional/_operations/1/bias"}
    aliases |= {"model/_functional/_operations/2/_kernel", "model/_functional/_operations/2/bias"}
    assert set(listing) == set(want) | (aliases if case == "tf2_keras_adam" else set())
    for key, (shape, dtype, value) in want.items():
        assert listing[key] == (shape, dtype), key
        loaded = jv.load_variable(directory, key)
        assert loaded.dtype == dtype and loaded.shape == shape, key
        np.testing.assert_array_equal(loaded, value, err_msg=key)


def test_keras3_weights_are_listed_through_the_model_as_well():
    directory = DATA / "tf2_keras_adam"
    through_model = jv.load_variable(directory, "model/_functional/_operations/1/_kernel")
    keyed = jv.load_variable(directory, "optimizer/_trainable_variables/0")
    np.testing.assert_array_equal(through_model, keyed)
    names = [key for key, *_ in jv.list_variables(directory)]
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" not in names and "save_counter" in names


def test_tf2_optimizer_slots_strings_and_empty_arrays():
    directory = DATA / "tf2_more"
    names = [key for key, *_ in jv.list_variables(directory)]
    assert "model/kernel/.OPTIMIZER_SLOT/optimizer/m" in names
    assert "model/bias/.OPTIMIZER_SLOT/optimizer/v" in names
    strings = jv.load_variable(directory, "values/strings")
    assert strings.dtype == object and strings.tolist() == [b"alpha", b"", b"\x00\xffbytes"]
    assert jv.load_variable(directory, "values/scalar_string").item() == b"one"
    assert jv.load_variable(directory, "values/empty").shape == (0, 3)
    text = jv.Variable(jnp.zeros(3), name="values/strings")
    with pytest.raises(ValueError, match=r"'values/strings': dtype object in the file, float32"):
        jv.restore(directory, [text], strict=False)


def test_a_partitioned_variable_is_reassembled_from_slices_in_two_shards():
    directory = DATA / "tf1_sharded_partitioned"
    names = [key for key, *_ in jv.list_variables(directory)]
    assert names == ["counter", "dense/bias", "dense/kernel", "embedding"]  # no slice keys
    embedding = jv.load_variable(directory, "embedding")
    np.testing.assert_array_equal(embedding, expected("tf1_sharded_partitioned")["embedding"][2])


def test_latest_checkpoint_and_prefixes():
    directory = DATA / "tf1_convnet"
    prefix = jv.latest_checkpoint(directory)
    assert prefix == str(directory / "model.ckpt-3")
    assert jv.list_variables(prefix) == jv.list_variables(directory)
    assert jv.list_variables(prefix + ".index") == jv.list_variables(directory)
    assert jv.latest_checkpoint(DATA) is None  # no state file there, as TF returns


def _copy(tmp_path, case):
    target = tmp_path / case
    shutil.copytree(DATA / case, target)
    return target


def test_a_corrupted_value_is_an_error_naming_its_key_and_restores_nothing(tmp_path, checksums):
    directory = _copy(tmp_path, "tf1_dtypes")
    data = directory / "model.ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[12] ^= 0x40  # inside scope/f32 (offset 11, 8 bytes)
    data.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"'scope/f32': its data does not match its checksum"):
        jv.load_variable(directory, "scope/f32")
    i32_value = expected("tf1_dtypes")["scope/i32"][2]
    np.testing.assert_array_equal(jv.load_variable(directory, "scope/i32"), i32_value)
    f32 = jv.Variable(jnp.zeros(2), name="scope/f32")
    i32 = jv.Variable(jnp.zeros(2, jnp.int32), name="scope/i32")
    with pytest.raises(ValueError, match=r"(?s)no variable was changed.*'scope/f32': its data"):
        jv.restore(directory, [f32, i32], strict=False)
    assert f32.value.tolist() == [0.0, 0.0] and i32.value.tolist() == [0, 0]


def test_a_damaged_index_and_a_missing_shard_are_errors(tmp_path):
    directory = _copy(tmp_path, "tf1_sharded_partitioned")
    (directory / "model.ckpt.data-00001-of-00002").unlink()
    with pytest.raises(ValueError, match=r"data shard 'model.ckpt.data-00001-of-00002' is missing"):
        jv.load_variable(directory, "embedding")
    index = directory / "model.ckpt.index"
    raw = bytearray(index.read_bytes())
    raw[20] ^= 0xFF
    index.write_bytes(bytes(raw))
    with pytest.raises(
        ValueError, match=r"its index is damaged: a block's checksum does not match"
    ):
        jv.list_variables(directory)


def test_int64_restores_into_int32_when_it_fits_and_names_the_key_when_not():
    assert not jax.config.read("jax_enable_x64")
    step = jv.Variable(jnp.int32(0), name="global_step")
    jv.restore(DATA / "tf1_convnet", [step], strict=False)
    assert step.dtype == jnp.int32 and int(step.value) == 3
    counter = jv.Variable(jnp.int32(0), name="counter")  # TF holds 2**40 + 7
    with pytest.raises(ValueError, match=r"'counter': its int64 values do not fit the int32"):
        jv.restore(DATA / "tf1_sharded_partitioned", [counter], strict=False)
    assert int(counter.value) == 0


def test_a_tf2_keras_model_restored_with_a_map_computes_tfs_outputs():
    class Dense(jv.Module):
        def __init__(self, n_in, n_out):
            super().__init__()
            self.kernel = jv.Variable(jnp.zeros((n_in, n_out)), name="kernel")
            self.bias = jv.Variable(jnp.zeros(n_out), name="bias")

        def __call__(self, x):
            return x @ self.kernel + self.bias

    class Model(jv.Module):
        def __init__(self):
            super().__init__()
            self.hidden, self.out = Dense(6, 5), Dense(5, 3)

        def __call__(self, x):
            return self.out(jax.nn.relu(self.hidden(x)))

    model = Model()
    layers = {
        "hidden/": "model/_functional/_operations/1/",
        "out/": "model/_functional/_operations/2/",
    }

    def tf_key(key):
        prefix = key.split("/")[0] + "/"
        return layers[prefix] + key[len(prefix) :].replace("kernel", "_kernel")

    jv.restore(DATA / "tf2_keras_adam", model, strict=False, map=tf_key)
    outputs = np.load(DATA / "tf2_keras_adam" / "outputs.npz")
    np.testing.assert_allclose(model(outputs["probe"]), outputs["out"], atol=1e-5)


def test_strict_restore_lists_what_nothing_restores():
    step = jv.Variable(jnp.int32(0), name="global_step")
    with pytest.raises(ValueError) as info:
        jv.restore(DATA / "tf1_convnet", [step])
    message = str(info.value)
    assert "unexpected key 'conv1/weights'" in message and "'global_step'" not in message
    assert int(step.value) == 0


def test_a_map_naming_no_target_key_and_a_missing_file_key_are_errors():
    w = jv.Variable(jnp.zeros((8, 10)), name="w")
    with pytest.raises(ValueError, match=r"map names 'nope', which is not a key of the target"):
        jv.restore(DATA / "tf1_convnet", [w], map={"nope": "logits/weights"})
    with pytest.raises(ValueError, match=r"missing key 'logits/absent' \(for 'w'\)"):
        jv.restore(DATA / "tf1_convnet", [w], strict=False, map={"w": "logits/absent"})
    with pytest.raises(ValueError, match=r"'logits/biases' \(for 'w'\): shape \(10,\) in the file"):
        jv.restore(DATA / "tf1_convnet", [w], strict=False, map={"w": "logits/biases"})
    jv.restore(DATA / "tf1_convnet", [w], strict=False, map={"w": "logits/weights"})
    weights = jv.load_variable(DATA / "tf1_convnet", "logits/weights")
    np.testing.assert_array_equal(w.value, weights)


def test_init_from_checkpoint_maps_scopes_and_names_of_the_active_store():
    with jv.variable_scope("new_conv1"):
        weights = jv.get_variable("weights", [3, 3, 3, 4], initializer=jnp.zeros)
        biases = jv.get_variable("biases", [4], initializer=jnp.zeros)
    kernel = jv.get_variable("head", [8, 10], initializer=jnp.zeros)
    untouched = jv.get_variable("untouched", [2], initializer=jnp.ones)
    jv.init_from_checkpoint(
        DATA / "tf1_convnet", {"conv1/": "new_conv1/", "logits/weights": "head"}
    )
    np.testing.assert_array_equal(
        weights.value, jv.load_variable(DATA / "tf1_convnet", "conv1/weights")
    )
    np.testing.assert_array_equal(
        biases.value, jv.load_variable(DATA / "tf1_convnet", "conv1/biases")
    )
    np.testing.assert_array_equal(
        kernel.value, jv.load_variable(DATA / "tf1_convnet", "logits/weights")
    )
    assert untouched.value.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match=r"'absent/' names no variable of the active store"):
        jv.init_from_checkpoint(DATA / "tf1_convnet", {"conv1/": "absent/"})
    with pytest.raises(ValueError, match=r"maps a scope to a name"):
        jv.init_from_checkpoint(DATA / "tf1_convnet", {"conv1/": "head"})


def test_the_crc32c_fallback_matches_google_crc32c(monkeypatch):
    google_crc32c = pytest.importorskip("google_crc32c")
    monkeypatch.setattr(_crc32c, "_fast", None)
    rng = np.random.default_rng(0)
    for size in (0, 1, 4095, 4096, 70_001, 3 << 20):  # byte by byte, then vectorised
        data = rng.integers(0, 256, size, dtype=np.uint8)
        assert _crc32c.crc32c(data) == google_crc32c.value(data), size
    assert _crc32c.masked(_crc32c.crc32c(b"hello")) == 0x191C1FBB


def test_the_port_example_computes_tfs_logits():
    from tests.test_readme import run_example

    out = run_example("port_tf1_convnet.py")
    assert "global_step: 3" in out
    assert "max abs difference" in out and "with the moving averages" in out


# -- from an adversarial review ----------------------------------------------------------------


def test_a_partitioned_variable_saved_without_all_its_parts_is_refused():
    """TF refuses it too ("Does not have sufficient slices")."""
    with pytest.raises(ValueError, match=r"'part': its slices cover 49 of its 70 elements"):
        jv.load_variable(DATA / "tf1_partial_partitions", "part")
    part = jv.Variable(jnp.zeros((10, 7)), name="part")
    with pytest.raises(ValueError, match=r"no variable was changed"):
        jv.restore(DATA / "tf1_partial_partitions", [part])
    assert float(part.value.sum()) == 0.0


@pytest.mark.parametrize("spelling", ["raw", "octal", "single quotes"])
def test_the_state_file_names_any_path_as_tf_writes_it(tmp_path, spelling):
    directory = tmp_path / "ünicode dir"
    shutil.copytree(DATA / "tf1_dtypes", directory)
    prefix = str(directory / "model.ckpt")
    encoded = prefix.encode()
    if spelling == "octal":  # protobuf's text format may escape non-ASCII bytes
        encoded = b"".join(b"\\%03o" % b if b > 127 else bytes([b]) for b in encoded)
    quote = b"'" if spelling == "single quotes" else b'"'
    (directory / "checkpoint").write_bytes(
        b"model_checkpoint_path : " + quote + encoded + quote + b"\n"
    )
    assert jv.latest_checkpoint(directory) == prefix
    assert [k for k, *_ in jv.list_variables(directory)][0] == "scope/b"


def test_a_state_file_naming_a_missing_checkpoint_is_none(tmp_path):
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "gone-7"\n')
    assert jv.latest_checkpoint(tmp_path) is None
    with pytest.raises(
        ValueError, match=r"a directory without a TensorFlow 'checkpoint' state file"
    ):
        jv.list_variables(tmp_path)


def test_paths_name_a_checkpoint_in_every_spelling(tmp_path):
    prefix = DATA / "tf1_sharded_partitioned" / "model.ckpt"
    listing = jv.list_variables(prefix)
    for path in (str(prefix) + ".data-00001-of-00002", os.fsencode(str(prefix)), prefix):
        assert jv.list_variables(path) == listing
    with pytest.raises(ValueError, match=r"No checkpoint at .*nothing.*no 'nothing.index'"):
        jv.list_variables(tmp_path / "nothing")
    with pytest.raises(ValueError, match=r"No checkpoint at"):
        jv.restore(tmp_path / "nothing", [jv.Variable(1.0)])


def test_tf2_keys_may_be_given_as_tensorflow_lists_them():
    directory = DATA / "tf2_more"
    full = jv.load_variable(directory, "model/kernel/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_array_equal(full, jv.load_variable(directory, "model/kernel"))
    kernel = jv.Variable(jnp.zeros((2, 3)), name="k")
    jv.restore(
        directory, {"k": kernel}, strict=False, map={"k": "model/kernel/.ATTRIBUTES/VARIABLE_VALUE"}
    )
    np.testing.assert_array_equal(kernel.value, full)


def test_maps_that_cannot_mean_anything_are_errors():
    w = jv.Variable(jnp.zeros((8, 10)), name="logits/weights")
    path = DATA / "tf1_convnet"
    with pytest.raises(ValueError, match=r"prefix 'new/' starts no key of the target"):
        jv.restore(path, [w], strict=False, map={"new/": "logits/"})
    with pytest.raises(ValueError, match=r"a prefix becomes another prefix, ending with '/'"):
        jv.restore(path, [w], strict=False, map={"logits/": "old"})
    with pytest.raises(TypeError, match=r"returned \('logits/weights',\)"):
        jv.restore(path, [w], strict=False, map=lambda key: (key,))
    assert float(w.value.sum()) == 0.0


def test_init_from_checkpoint_from_the_root_and_with_variables():
    with jv.variable_scope("ported"):
        weights = jv.get_variable("logits/weights", [8, 10], initializer=jnp.zeros)
    jv.init_from_checkpoint(DATA / "tf1_convnet", {"logits/": "ported/logits/"})
    expected_weights = jv.load_variable(DATA / "tf1_convnet", "logits/weights")
    np.testing.assert_array_equal(weights.value, expected_weights)
    jv.reset_default_store()
    biases = jv.get_variable("logits/biases", [10], initializer=jnp.zeros)
    step = jv.get_variable("global_step", [], dtype=jnp.int32, initializer=jnp.zeros)
    jv.init_from_checkpoint(DATA / "tf1_convnet", {"/": "/"})  # every variable, by its own name
    assert int(step.value) == 3
    np.testing.assert_array_equal(
        biases.value, jv.load_variable(DATA / "tf1_convnet", "logits/biases")
    )
    other = jv.Variable(jnp.zeros(10), name="renamed")
    jv.init_from_checkpoint(DATA / "tf1_convnet", {"logits/biases": other})
    np.testing.assert_array_equal(other.value, biases.value)
