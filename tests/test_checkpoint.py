"""jv.save / jv.restore (API.md section 8)."""

import json
import os
import pickle
import struct
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from models import MLP

import jaxvars as jv

DTYPES = [np.float32, jnp.bfloat16, np.float16, np.int8, np.int32, np.uint8, np.bool_, np.complex64]


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "ckpt.safetensors")


def values_of(variables):
    return {name: v.numpy() for name, v in variables.items()}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_dtype_round_trips_bit_exactly(path, dtype):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, size=(3, 5)).astype(np.uint8)
    if np.dtype(dtype) == np.bool_:
        data = raw % 2 == 0
    elif np.dtype(dtype).kind in "fcV":
        data = (rng.normal(size=(3, 5)) * 100).astype(dtype)
    else:
        data = raw.astype(dtype)
    v = jv.Variable(data, name="x")
    jv.save(path, {"x": v})
    v.assign(np.zeros_like(data))
    jv.restore(path, {"x": v})
    assert v.numpy().tobytes() == np.asarray(data).tobytes()
    assert v.dtype == np.dtype(dtype)


def test_the_file_is_standard_safetensors(path):
    v = jv.Variable(np.arange(6, dtype=np.float32).reshape(2, 3), name="w")
    jv.save(path, [v])
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        data = f.read()
    assert header["w"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
    np.testing.assert_array_equal(np.frombuffer(data, np.float32), np.arange(6))
    assert (8 + length) % 8 == 0


def test_module_store_optimizer_and_combinations(path):
    jv.random.set_seed(1)
    model = MLP([3, 4, 2])
    opt = jv.Optimizer(optax.adam(1e-2), model)
    opt.apply_gradients(jv.grad(lambda: sum(jnp.sum(v) for v in model.variables), model)())
    with jv.Store() as store, jv.variable_scope("extra"):
        jv.get_variable("scale", initializer=2.0)
    target = {"model": model, "opt": opt, "store": store}
    keys = sorted(jv._checkpoint.checkpoint_keys(target))
    assert "model/layers/0/w" in keys and "opt/0/mu/layers/1/b" in keys
    assert "opt/iterations" in keys and "store/extra/scale" in keys
    saved = values_of(jv._checkpoint.checkpoint_keys(target))
    jv.save(path, target)
    # A fresh model and optimiser (another numbered scope) restore it.
    jv.random.set_seed(99)
    fresh_model = MLP([3, 4, 2])
    fresh_opt = jv.Optimizer(optax.adam(1e-2), fresh_model)
    assert fresh_opt.scope_name == "optimizer_1"
    with jv.Store() as fresh_store, jv.variable_scope("extra"):
        jv.get_variable("scale", initializer=0.0)
    fresh = {"model": fresh_model, "opt": fresh_opt, "store": fresh_store}
    jv.restore(path, fresh)
    restored = values_of(jv._checkpoint.checkpoint_keys(fresh))
    assert restored.keys() == saved.keys()
    for key in saved:
        np.testing.assert_array_equal(restored[key], saved[key])
    assert int(fresh_opt.iterations) == 1


def test_list_keys_are_names_and_must_be_unique(path):
    a, b = jv.Variable(1.0, name="a"), jv.Variable(2.0, name="a")
    with pytest.raises(ValueError, match=r"these names repeat: \['a'\]"):
        jv.save(path, [a, b])
    with pytest.raises(TypeError, match="must hold Variables"):
        jv.save(path, [a, MLP([3, 4, 2])])
    with pytest.raises(TypeError, match="checkpoint target is a Module"):
        jv.save(path, 42)
    assert not os.path.exists(path)


def test_restore_lists_every_problem_and_changes_nothing(path):
    a = jv.Variable(np.ones((2, 2), np.float32), name="a")
    b = jv.Variable(np.ones(3, np.int32), name="b")
    c = jv.Variable(np.ones(1, np.float32), name="c")
    jv.save(path, {"a": a, "b": b, "c": c, "extra": jv.Variable(0.0)})
    wrong_a = jv.Variable(np.zeros((3, 2), np.float32))
    wrong_b = jv.Variable(np.zeros(3, np.float32))
    missing = jv.Variable(np.zeros(1, np.float32))
    target = {"a": wrong_a, "b": wrong_b, "c": c, "d": missing}
    before = {k: v.value for k, v in target.items()}
    with pytest.raises(ValueError) as info:
        jv.restore(path, target)
    message = str(info.value)
    for part in (
        "4 problem(s), no variable was changed",
        "missing key 'd'",
        "unexpected key 'extra'",
        "'a': shape (2, 2) in the file, (3, 2) in the variable",
        "'b': dtype int32 in the file, float32 in the variable",
    ):
        assert part in message, message
    assert all(target[k].value is before[k] for k in target)
    with pytest.raises(ValueError, match="unexpected key 'extra'"):
        jv.restore(path, {"a": a, "b": b, "c": c})
    jv.restore(path, {"a": a, "b": b, "c": c}, strict=False)


def overwrite(path, data):
    with open(path, "wb") as f:
        f.write(data)


def corrupt(path, at, data):
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data)


def test_truncated_and_corrupted_files(path):
    v = jv.Variable(np.arange(1000, dtype=np.float32), name="v")
    jv.save(path, [v])
    size = os.path.getsize(path)
    before = v.value
    with open(path, "rb") as f:
        content = f.read()

    cases = {
        "truncated": (lambda: overwrite(path, content[: size - 100]), "truncated"),
        "empty": (lambda: overwrite(path, b""), "too short"),
        "header bytes": (lambda: corrupt(path, 10, b"\xff\xfe{{"), "corrupted"),
        "length": (lambda: corrupt(path, 0, struct.pack("<Q", 10**12)), "header length"),
        "data": (lambda: corrupt(path, size - 40, b"\x01\x02\x03\x04"), "checksum"),
    }
    for name, (damage, message) in cases.items():
        overwrite(path, content)
        damage()
        with pytest.raises(ValueError, match=message):
            jv.restore(path, [v])
        assert v.value is before, name


def test_a_pickle_payload_is_never_executed(path, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps(Exploit())
    for content in (payload, struct.pack("<Q", len(payload)) + payload):
        overwrite(path, content)
        with pytest.raises(ValueError, match="Cannot restore"):
            jv.restore(path, [jv.Variable(0.0, name="v")])
    assert not marker.exists()


@pytest.mark.parametrize("unnamed", [True, False], ids=["O_TMPFILE", "named-temporary"])
@pytest.mark.parametrize("swap", [True, False], ids=["renameat2-exchange", "os.replace"])
def test_a_failed_save_leaves_the_previous_checkpoint_intact(path, monkeypatch, swap, unnamed):
    if not swap:
        monkeypatch.setattr(jv._atomic_file, "_exchange", lambda new, old: False)
    if not unnamed:
        monkeypatch.setattr(jv._atomic_file, "_open_unnamed", lambda directory: None)
    v = jv.Variable(np.arange(4, dtype=np.float32), name="v")
    jv.save(path, [v])
    v.assign([9, 9, 9, 9])
    jv.save(path, [v])  # a second save replaces the first
    v.assign([5, 5, 5, 5])
    real = jv._safetensors.as_bytes

    def failing(array):  # the header is written, then the data fails
        raise OSError("disk full")

    monkeypatch.setattr(jv._checkpoint, "as_bytes", failing)
    with pytest.raises(OSError, match="disk full"):
        jv.save(path, [v])
    monkeypatch.setattr(jv._checkpoint, "as_bytes", real)
    assert os.listdir(os.path.dirname(path)) == ["ckpt.safetensors"]
    jv.restore(path, [v])
    np.testing.assert_array_equal(v.numpy(), [9, 9, 9, 9])


def join_background_frees():
    for thread in threading.enumerate():
        if thread.name == "jaxvars-free":
            thread.join()


def open_fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/fd is Linux's")
def test_saving_over_a_checkpoint_leaves_one_file_and_no_open_descriptor(path):
    v = jv.Variable(np.arange(4, dtype=np.float32), name="v")
    jv.save(path, [v])
    join_background_frees()
    before = open_fds()
    for value in ([1, 1, 1, 1], [2, 2, 2, 2]):
        v.assign(value)
        jv.save(path, [v])
        assert os.listdir(os.path.dirname(path)) == ["ckpt.safetensors"]  # old name gone at once
    join_background_frees()
    assert open_fds() == before  # the previous files, held open to be freed, were closed
    v.assign([0, 0, 0, 0])
    jv.restore(path, [v])
    np.testing.assert_array_equal(v.numpy(), [2, 2, 2, 2])


def cached_pages(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return jv._atomic_file.cache_stat(fd)
    finally:
        os.close(fd)


@pytest.fixture
def page_cache(tmp_path):
    """Skips unless this kernel reports page-cache counts and this filesystem drops
    clean pages on request (tmpfs does not)."""
    probe = tmp_path / "probe"
    probe.write_bytes(b"x" * 65536)
    fd = os.open(probe, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    stat = cached_pages(probe)
    if stat is None or stat.cache != 0:
        pytest.skip("no cachestat (Linux < 6.5), or a filesystem that keeps its pages")
    probe.unlink()


def test_a_save_drops_the_previous_checkpoints_clean_cache(path, page_cache):
    v = jv.Variable(np.ones(1 << 18, np.float32), name="v")  # 1 MiB
    jv.save(path, [v], durable=True)  # on disk: its cached pages are clean
    previous = path + ".previous"
    os.link(path, previous)  # keeps the previous file alive to look at it
    assert cached_pages(previous).cache > 0
    jv.save(path, [v])
    assert cached_pages(previous).cache == 0  # its memory went to the new file


def test_a_save_leaves_an_unwritten_previous_checkpoint_alone(path, page_cache):
    v = jv.Variable(np.ones(1 << 18, np.float32), name="v")
    jv.save(path, [v])  # not yet on disk
    previous = path + ".previous"
    os.link(path, previous)
    before = cached_pages(previous)
    assert before.dirty > 0
    jv.save(path, [v])
    after = cached_pages(previous)  # not dropped, and not written out to be dropped
    assert (after.cache, after.dirty, after.writeback) == (before.cache, before.dirty, 0)


def test_saving_through_a_symbolic_link_replaces_its_target_and_keeps_the_link(tmp_path):
    target, link = tmp_path / "ckpt-100.safetensors", tmp_path / "latest.safetensors"
    v = jv.Variable([1.0, 2.0], name="v")
    jv.save(target, [v])
    link.symlink_to(target.name)
    v.assign([3.0, 4.0])
    jv.save(link, [v])
    assert link.is_symlink()
    v.assign([0.0, 0.0])
    jv.restore(target, [v])
    np.testing.assert_array_equal(v.numpy(), [3.0, 4.0])


def test_durable_save_round_trips(path):
    v = jv.Variable([1.0, 2.0], name="v")
    jv.save(path, [v], durable=True)
    v.assign([0.0, 0.0])
    jv.restore(path, [v])
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0])


def test_restoring_sharded_variables_keeps_their_shardings(path):
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
    sharding = NamedSharding(mesh, PartitionSpec("data", "model"))
    v = jv.Variable(np.arange(32, dtype=np.float32).reshape(8, 4), name="w", sharding=sharding)
    jv.save(path, [v])
    v.assign(np.zeros((8, 4), np.float32))
    jv.restore(path, [v])
    assert v.sharding == sharding
    assert {s.device for s in v.value.addressable_shards} == set(jax.devices())
    np.testing.assert_array_equal(v.numpy(), np.arange(32).reshape(8, 4))


# -- refusals and crafted files (issue: trust) -----------------------------------------------


@pytest.mark.parametrize("through_link", [False, True], ids=["directory", "link-to-directory"])
def test_saving_onto_a_directory_is_refused_before_touching_anything(tmp_path, through_link):
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    (directory / "keep.txt").write_text("mine")
    target = directory
    if through_link:
        target = tmp_path / "link"
        target.symlink_to(directory)
    with pytest.raises(ValueError, match="is a directory") as e:
        jv.save(str(target), [jv.Variable(1.0, name="v")])
    assert isinstance(e.value, jv.JaxvarsError)
    assert sorted(os.listdir(tmp_path)) == sorted(["checkpoints"] + ["link"] * through_link)
    assert os.listdir(directory) == ["keep.txt"] and directory.is_dir()


def test_a_key_named_like_the_header_metadata_is_refused(path):
    v = jv.Variable(1.0, name="v")
    for target in ({"__metadata__": v}, [jv.Variable(1.0, name="__metadata__")]):
        with pytest.raises(ValueError, match="'__metadata__'.*keeps that key") as e:
            jv.save(path, target)
        assert isinstance(e.value, jv.JaxvarsError)
        with pytest.raises(ValueError, match="'__metadata__'"):
            jv.restore(path, target)
    assert not os.path.exists(path)


def test_float8_round_trips_and_unsupported_dtypes_are_named(path):
    v = jv.Variable(jnp.array([0.5, -2.0], jnp.float8_e4m3fn), name="f8")
    jv.save(path, [v])
    v.assign(jnp.zeros(2, jnp.float8_e4m3fn))
    jv.restore(path, [v])
    assert v.numpy().astype(np.float32).tolist() == [0.5, -2.0]
    small = jv.Variable(jnp.array([1, 2], jnp.int4), name="small")
    with pytest.raises(TypeError, match="'small' has dtype int4.*cannot hold") as e:
        jv.save(path, [small])
    assert isinstance(e.value, jv.JaxvarsError)


def test_checkpoint_files_follow_the_umask_or_keep_their_mode(path):
    v = jv.Variable(1.0, name="v")
    old = os.umask(0o027)
    try:
        jv.save(path, [v])
        assert os.stat(path).st_mode & 0o777 == 0o640
        os.chmod(path, 0o604)
        jv.save(path, [v])  # overwriting keeps the file's mode, as open() does
        assert os.stat(path).st_mode & 0o777 == 0o604
    finally:
        os.umask(old)


def test_list_and_load_variables_without_a_target(path):
    model = MLP([3, 4, 2])
    opt = jv.Optimizer(optax.adam(0.1), model)
    jv.save(path, {"model": model, "opt": opt})
    listed = jv.list_variables(path)
    assert [key for key, _, _ in listed] == sorted(key for key, _, _ in listed)
    assert ("model/layers/0/w", (3, 4), np.dtype(np.float32)) in listed
    assert ("opt/iterations", (), np.dtype(np.int32)) in listed
    loaded = jv.load_variable(path, "model/layers/1/w")
    np.testing.assert_array_equal(loaded, model.layers[1].w.numpy())
    assert loaded.flags.writeable
    with pytest.raises(ValueError, match="no key 'model/w'.*'model/layers/0/b'.*list_variables"):
        jv.load_variable(path, "model/w")


def test_load_variable_checks_its_bytes(path):
    jv.save(path, {"v": jv.Variable(np.arange(1000, dtype=np.float32))})
    size = os.path.getsize(path)
    corrupt(path, size - 40, b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="checksum"):
        jv.load_variable(path, "v")
    assert jv.list_variables(path) == [("v", (1000,), np.dtype(np.float32))]
    with open(path, "rb") as f:
        content = f.read()
    overwrite(path, content[: size - 100])
    with pytest.raises(ValueError, match="truncated"):
        jv.load_variable(path, "v")
    overwrite(path, b"")
    with pytest.raises(ValueError, match="too short"):
        jv.list_variables(path)


def test_the_random_stream_in_a_checkpoint_resumes_the_same_draws(path):
    jv.random.set_seed(3)
    jv.random.normal((2,))
    jv.save(path, {"rng": jv.random.key_variable()})
    expected = [jv.random.normal((3,)) for _ in range(2)]
    jv.random.set_seed(99)
    jv.restore(path, {"rng": jv.random.key_variable()})
    for want in expected:
        np.testing.assert_array_equal(jv.random.normal((3,)), want)
    assert jv.random.key_variable().trainable is False
