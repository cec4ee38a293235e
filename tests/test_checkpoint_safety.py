"""jv.save and jv.restore against hostile conditions (API.md section 8): saves
killed at the file-size limit, and crafted or corrupted headers."""

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jaxvars as jv
from jaxvars._errors import JaxvarsValueError

WORKER = os.path.join(os.path.dirname(__file__), "_ckpt_killed_save.py")


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "ckpt.safetensors")


def unnamed_files_work(directory):
    """Whether this kernel and filesystem make unnamed files (O_TMPFILE)."""
    try:
        os.close(os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600))
    except (AttributeError, OSError):
        return False
    return True


def unnamed_files_open_in(directory):
    """The open files of this process that are unnamed files made in ``directory``."""
    fds = "/proc/self/fd"
    targets = []
    for fd in os.listdir(fds):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor, closed
            targets.append(os.readlink(os.path.join(fds, fd)))
    # Linux shows an O_TMPFILE file as "<directory>/#<inode> (deleted)".
    return [t for t in targets if t.startswith(f"{directory}/#") and t.endswith(" (deleted)")]


def test_a_save_writes_an_unnamed_file_and_names_it_only_when_complete(path, monkeypatch):
    directory = os.path.dirname(path)
    if sys.platform != "linux" or not unnamed_files_work(directory):
        pytest.skip("no O_TMPFILE here: the named fallback is tested below")
    seen = []
    real = jv._safetensors.as_bytes

    def looking(array):  # called as the data is being written
        seen.append((sorted(os.listdir(directory)), len(unnamed_files_open_in(directory))))
        return real(array)

    monkeypatch.setattr(jv._checkpoint, "as_bytes", looking)
    v = jv.Variable(np.arange(4, dtype=np.float32), name="v")
    jv.save(path, [v])
    v.assign([5, 6, 7, 8])
    jv.save(path, [v], durable=True)
    assert seen == [([], 1), (["ckpt.safetensors"], 1)]  # no temporary name while writing
    assert os.listdir(directory) == ["ckpt.safetensors"]
    v.assign([0, 0, 0, 0])
    jv.restore(path, [v])
    np.testing.assert_array_equal(v.numpy(), [5, 6, 7, 8])


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as Linux has them")
@pytest.mark.parametrize("mode", ["unnamed", "named"], ids=["O_TMPFILE", "named-fallback"])
def test_saves_killed_at_the_file_size_limit_leave_only_the_previous_checkpoint(path, mode):
    directory = os.path.dirname(path)
    if mode == "unnamed" and not unnamed_files_work(directory):
        pytest.skip("no O_TMPFILE on this filesystem")
    v = jv.Variable(np.arange(4, dtype=np.float32), name="v")
    jv.save(path, [v])
    limit = 64 * 1024  # the new checkpoint holds 256 KiB
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no .pyc file may meet the limit first
    for _ in range(3):
        worker = subprocess.Popen(
            [sys.executable, WORKER, path, str(limit), mode],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == -signal.SIGXFSZ, err.decode()[-2000:]
        assert out.decode() == "writing data\n"  # killed inside the save, writing
        left = sorted(os.listdir(directory))
        if mode == "unnamed":
            assert left == ["ckpt.safetensors"]
        else:  # this kill's temporary, cut at the limit; the earlier kills' were swept
            assert len(left) == 2 and left[1] == "ckpt.safetensors"
            assert left[0].startswith(".ckpt.safetensors.")
            assert left[0].endswith(f".{worker.pid}.jaxvars-tmp")
            assert os.path.getsize(os.path.join(directory, left[0])) == limit
        v.assign([9, 9, 9, 9])
        jv.restore(path, [v])
        np.testing.assert_array_equal(v.numpy(), [0, 1, 2, 3])
    jv.save(path, [v])  # the next save sweeps what a dead save left
    assert os.listdir(directory) == ["ckpt.safetensors"]


def test_a_save_killed_between_two_values_leaves_the_previous_checkpoint_intact(path):
    v = jv.Variable(np.arange(4, dtype=np.float32), name="v")
    jv.save(path, [v])
    script = textwrap.dedent(
        f"""
        import os, signal
        import numpy as np
        import jaxvars as jv
        import jaxvars._checkpoint as ckpt
        real = ckpt.as_bytes
        calls = []
        def dying(array):
            calls.append(1)
            if len(calls) > 3:  # in the middle of writing the data
                os.kill(os.getpid(), signal.SIGKILL)
            return real(array)
        ckpt.as_bytes = dying
        big = {{f"x{{i}}": jv.Variable(np.ones(1000, np.float32)) for i in range(5)}}
        jv.save({path!r}, big)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    jv.restore(path, [v])
    np.testing.assert_array_equal(v.numpy(), [0, 1, 2, 3])
    directory = os.path.dirname(path)
    left = len(os.listdir(directory)) - 1
    assert left == (0 if unnamed_files_work(directory) else 1)  # else: a named temporary
    jv.save(path, [v])  # which the next save removes
    assert os.listdir(directory) == ["ckpt.safetensors"]


# -- crafted and corrupted headers -------------------------------------------------------------


def write_header(path, header, data=b""):
    encoded = header.encode() if isinstance(header, str) else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + data)


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


V = entry()
METADATA = "the header's __metadata__ is malformed (corrupted): "
ENTRY = "'v': the header entry is malformed (corrupted): "
CRAFTED = {
    "metadata-null": ({"v": V, "__metadata__": None}, METADATA + "it is null, not an object"),
    "metadata-array": ({"v": V, "__metadata__": [1]}, METADATA + "it is an array, not an object"),
    "metadata-number": ({"v": V, "__metadata__": 3}, METADATA + "it is a number, not an object"),
    "metadata-string": ({"v": V, "__metadata__": "x"}, METADATA + "it is a string, not an object"),
    "metadata-value-not-a-string": (
        {"v": V, "__metadata__": {"format": 1}},
        METADATA + "its 'format' is a number, not a string",
    ),
    "checksums-not-json": (
        {"v": V, "__metadata__": {"sum64": "not json"}},
        METADATA + "its 'sum64' is not an object of integer checksums",
    ),
    "checksums-not-an-object": (
        {"v": V, "__metadata__": {"sum64": "[1]"}},
        METADATA + "its 'sum64' is not an object of integer checksums",
    ),
    "checksum-not-an-int": (
        {"v": V, "__metadata__": {"sum64": '{"v": "x"}'}},
        METADATA + "its 'sum64' is not an object of integer checksums",
    ),
    "header-not-an-object": ([1], "the header is not a JSON object (corrupted)"),
    "header-null": ("null", "the header is not a JSON object (corrupted)"),
    "header-duplicate-key": (
        f'{{"v": {json.dumps(V)}, "v": {json.dumps(V)}}}',
        "the header is malformed (corrupted): the key 'v' appears twice",
    ),
    "infinity-in-shape": (
        '{"v": {"dtype": "F32", "shape": [Infinity], "data_offsets": [0, 8]}}',
        "the header is not valid JSON (corrupted)",
    ),
    "huge-integer": (
        '{"v": {"dtype": "F32", "shape": [' + "9" * 5000 + '], "data_offsets": [0, 8]}}',
        "the header is not valid JSON (corrupted)",
    ),
    "deep-nesting": ('{"v": ' + "[" * 100_000 + "]" * 100_000 + "}", "not valid JSON (corrupted)"),
    "entry-an-array": ({"v": [1, 2]}, ENTRY + "it is an array, not an object"),
    "entry-null": ({"v": None}, ENTRY + "it is null, not an object"),
    "dtype-missing": ({"v": {"shape": [2], "data_offsets": [0, 8]}}, ENTRY + "it has no dtype"),
    "dtype-an-array": ({"v": entry(dtype=[1])}, ENTRY + "its dtype [1] is not a string"),
    "dtype-an-object": ({"v": entry(dtype={})}, ENTRY + "its dtype {} is not a string"),
    "shape-missing": ({"v": {"dtype": "F32", "data_offsets": [0, 8]}}, ENTRY + "it has no shape"),
    "shape-negative": (
        {"v": entry(shape=(-2,))},
        ENTRY + "its shape [-2] is not a list of non-negative integers",
    ),
    "shape-float": (
        {"v": entry(shape=(2.0,))},
        ENTRY + "its shape [2.0] is not a list of non-negative integers",
    ),
    "shape-bool": (
        {"v": entry(shape=(True,), offsets=(0, 4))},
        ENTRY + "its shape [true] is not a list of non-negative integers",
    ),
    "shape-a-string": (
        {"v": {"dtype": "F32", "shape": "ab", "data_offsets": [0, 8]}},
        ENTRY + 'its shape "ab" is not a list of non-negative integers',
    ),
    "shape-too-large": (
        {"v": entry(shape=(0, 2**62), offsets=(0, 0))},
        ENTRY + "its shape [0, 4611686018427387904] is too large",
    ),
    "shape-too-many-dimensions": (
        {"v": entry(shape=(1,) * 65, offsets=(0, 4))},
        ENTRY + "its shape has 65 dimensions (at most 64)",
    ),
    "offsets-missing": ({"v": {"dtype": "F32", "shape": [2]}}, ENTRY + "it has no data_offsets"),
    "offsets-three": (
        {"v": entry(offsets=(0, 8, 9))},
        ENTRY + "its data_offsets [0, 8, 9] are not a [begin, end] pair of integers",
    ),
    "offsets-negative": (
        {"v": entry(offsets=(-8, 0))},
        ENTRY + "its data_offsets [-8, 0] are not a byte range (0 <= begin <= end)",
    ),
    "offsets-reversed": (
        {"v": entry(offsets=(8, 0))},
        ENTRY + "its data_offsets [8, 0] are not a byte range (0 <= begin <= end)",
    ),
    "offsets-beyond-the-end": (
        {"v": entry(offsets=(16, 24))},
        "'v': its data lies beyond the end of the file (truncated or corrupted)",
    ),
    "size-mismatch": (
        {"v": entry(shape=(3,))},
        "'v': its byte range does not match its shape and dtype (corrupted)",
    ),
    "overlapping-ranges": (
        {"v": V, "w": entry(offsets=(4, 12))},
        "'w': its bytes overlap those of 'v' (corrupted)",
    ),
}
READS = {
    "restore": lambda path, v: jv.restore(path, {"v": v}, strict=False),
    "list_variables": lambda path, v: jv.list_variables(path),
    "load_variable": lambda path, v: jv.load_variable(path, "v"),
}


@pytest.mark.parametrize("read", list(READS))
@pytest.mark.parametrize("case", list(CRAFTED))
def test_each_malformed_header_gives_one_clear_value_error_and_changes_nothing(path, case, read):
    header, problem = CRAFTED[case]
    write_header(path, header, data=bytes(16))
    v = jv.Variable([1.0, 2.0], name="v")
    before = v.value
    with pytest.raises(JaxvarsValueError) as e:
        READS[read](path, v)
    message = str(e.value)
    first = "Cannot restore from" if read == "restore" else "Cannot read the checkpoint"
    assert message.startswith(f"{first} {path!r}: 1 problem(s)"), message
    assert problem in message, message
    assert v.value is before


def test_a_safetensors_file_from_another_tool_is_read(path):
    """Metadata of strings, or none, and no checksums: the format allows both."""
    data = np.array([1.5, -2.0], np.float32).tobytes()
    for metadata in ({"__metadata__": {"format": "pt"}}, {}):
        write_header(path, {"v": V, **metadata}, data=data)
        assert jv.list_variables(path) == [("v", (2,), np.dtype(np.float32))]
        np.testing.assert_array_equal(jv.load_variable(path, "v"), [1.5, -2.0])
        v = jv.Variable([0.0, 0.0], name="v")
        jv.restore(path, [v])
        np.testing.assert_array_equal(v.numpy(), [1.5, -2.0])
