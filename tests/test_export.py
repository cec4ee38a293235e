"""jv.export and jv.load_exported (API.md section 13): a model shipped without its code."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvars as jv
from tests.models import MLP


def _listing(directory):
    return sorted(os.listdir(directory))


def test_the_export_runs_in_a_fresh_interpreter_without_the_models_code(tmp_path):
    model = MLP([3, 5, 2])
    x = jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(4, 3)
    jv.export(tmp_path, model, x, batch_axes=0)
    assert _listing(tmp_path) == ["exported.bin", "values.safetensors"]
    np.save(tmp_path.parent / "x.npy", np.asarray(x))
    script = (
        "import sys, numpy as np, jaxvars as jv\n"
        f"f = jv.load_exported({str(tmp_path)!r})\n"
        f"x = np.load({str(tmp_path.parent / 'x.npy')!r})\n"
        "np.save(sys.argv[1], np.asarray(f(x)))\n"
        "print(np.asarray(f(np.concatenate([x, x]))).shape)\n"
        "assert not any(m.startswith('tests') for m in sys.modules), 'imported the model code'\n"
    )
    out = tmp_path.parent / "out.npy"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    run = subprocess.run(
        [sys.executable, "-c", script, str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path.parent,  # not the project: only the installed jaxvars is importable
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "(8, 2)"  # another batch size
    np.testing.assert_allclose(np.load(out), model(x), rtol=1e-6)


def test_batch_axes_per_argument_and_a_shared_size(tmp_path):
    w = jv.Variable(jnp.array([1.0, 2.0]), name="w")

    def fn(x, y, scale):
        return x * w + y, scale * 2

    example = (jnp.ones((3, 2)), jnp.ones((3, 2)), jnp.float32(1))
    jv.export(tmp_path, fn, *example, batch_axes=(0, 0, None))
    loaded = jv.load_exported(tmp_path)
    out, doubled = loaded(jnp.ones((5, 2)), jnp.zeros((5, 2)), jnp.float32(4))
    assert out.tolist() == [[1.0, 2.0]] * 5 and float(doubled) == 8.0
    with pytest.raises(
        ValueError, match=r"argument 1 has batch = 4 .* an earlier argument has batch = 5"
    ):
        loaded(jnp.ones((5, 2)), jnp.zeros((4, 2)), jnp.float32(4))


def test_wrong_arguments_are_named_with_the_exported_signature(tmp_path):
    w = jv.Variable(jnp.ones(3), name="w")
    jv.export(tmp_path, lambda x: x * w, jnp.ones((2, 3)), batch_axes=0)
    loaded = jv.load_exported(tmp_path)
    signature = r"The exported signature: \(\(batch, 3\) float32\)"
    with pytest.raises(
        ValueError,
        match=r"argument 0 has shape \(2, 4\), the export takes \(batch, 3\).*" + signature,
    ):
        loaded(jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"argument 0 has dtype int32, the export takes float32"):
        loaded(jnp.ones((2, 3), jnp.int32))
    with pytest.raises(
        ValueError, match=r"the export takes 1 arrays \(its arguments. leaves\), got 2"
    ):
        loaded(jnp.ones((2, 3)), jnp.ones((2, 3)))
    assert loaded(jnp.ones((2, 3))).shape == (2, 3)  # still works after the errors


def test_an_assigning_function_keeps_counting_in_the_loaded_callable_never_in_the_files(tmp_path):
    count = jv.Variable(0, name="count")
    total = jv.Variable(jnp.zeros(2), name="total")

    def accumulate(x):
        count.assign_add(1)
        total.assign_add(x)
        return count.value

    jv.export(tmp_path, accumulate, jnp.ones(2))
    assert int(count.value) == 0 and total.value.tolist() == [0.0, 0.0]  # exporting changes nothing
    saved = (tmp_path / "values.safetensors").read_bytes()
    first, second = jv.load_exported(tmp_path), jv.load_exported(tmp_path)
    assert [int(first(jnp.ones(2))) for _ in range(3)] == [1, 2, 3]
    assert int(second(jnp.ones(2))) == 1  # each loaded callable starts from the saved values
    assert (tmp_path / "values.safetensors").read_bytes() == saved
    assert jv.load_variable(str(tmp_path / "values.safetensors"), "count") == 0


def test_an_export_for_cpu_and_cuda_lowers_for_both_on_a_cpu_machine(tmp_path):
    w = jv.Variable(jnp.full(2, 3.0), name="w")
    jv.export(tmp_path, lambda x: x * w, jnp.ones(2), platforms=("cpu", "cuda"))
    exported = jax.export.deserialize(bytearray((tmp_path / "exported.bin").read_bytes()))
    assert exported.platforms == ("cpu", "cuda")
    assert jv.load_exported(tmp_path)(jnp.ones(2)).tolist() == [3.0, 3.0]


def test_bad_batch_axes_are_refused_before_anything_is_written(tmp_path):
    w = jv.Variable(jnp.ones(2), name="w")
    with pytest.raises(ValueError, match=r"batch_axes has 2 entries for 1 arguments"):
        jv.export(tmp_path / "a", lambda x: x * w, jnp.ones(2), batch_axes=(0, 0))
    with pytest.raises(
        ValueError, match=r"argument 0 \(shape \(2,\)\) axis 1, which it does not have"
    ):
        jv.export(tmp_path / "b", lambda x: x * w, jnp.ones(2), batch_axes=1)
    assert _listing(tmp_path) == []


def test_the_values_file_is_a_jv_save_file_of_the_state(tmp_path):
    model = MLP([2, 3, 1])
    jv.export(tmp_path, model, jnp.ones((1, 2)))
    restored = MLP([2, 3, 1])
    jv.restore(tmp_path / "values.safetensors", restored)
    for a, b in zip(model.variables, restored.variables, strict=True):
        np.testing.assert_array_equal(a.value, b.value)


def test_values_from_another_export_are_refused(tmp_path):
    w = jv.Variable(jnp.ones(2), name="w")
    jv.export(tmp_path / "a", lambda x: x * w, jnp.ones(2))
    v = jv.Variable(jnp.ones(3), name="w")
    jv.export(tmp_path / "b", lambda x: x * v, jnp.ones(3))
    os.replace(tmp_path / "b" / "values.safetensors", tmp_path / "a" / "values.safetensors")
    with pytest.raises(ValueError, match=r"do not match its export .* different exports"):
        jv.load_exported(tmp_path / "a")


def test_pytree_arguments_keep_their_structure(tmp_path):
    w = jv.Variable(jnp.ones((2, 3)), name="w")

    def fn(inputs, pair):
        return inputs["x"] @ w + pair[0] - pair[1]

    example = ({"x": jnp.ones((4, 2))}, (jnp.zeros(3), jnp.zeros(3)))
    jv.export(tmp_path, fn, *example, batch_axes=(0, None))
    loaded = jv.load_exported(tmp_path)
    assert loaded({"x": jnp.ones((6, 2))}, (jnp.ones(3), jnp.zeros(3))).shape == (6, 3)
    with pytest.raises(ValueError, match=r"argument 0\['x'\] has shape \(6, 5\)"):
        loaded({"x": jnp.ones((6, 5))}, (jnp.ones(3), jnp.zeros(3)))
    with pytest.raises(ValueError, match=r"argument 0\['x'\] has batch = 0 .* 1 or more"):
        loaded({"x": jnp.ones((0, 2))}, (jnp.ones(3), jnp.zeros(3)))


def test_an_int_batch_axis_skips_scalar_arguments_and_bad_batch_axes_are_type_errors(tmp_path):
    w = jv.Variable(jnp.ones(2), name="w")
    jv.export(tmp_path, lambda x, scale: x * w * scale, jnp.ones((3, 2)), 2.0, batch_axes=0)
    assert jv.load_exported(tmp_path)(jnp.ones((5, 2)), 3.0).tolist() == [[3.0, 3.0]] * 5
    for bad in (True, 0.0, "0", (0, "1")):
        with pytest.raises(TypeError, match=r"batch_axes is None, an int, or a tuple"):
            jv.export(tmp_path / "bad", lambda x: x * w, jnp.ones((3, 2)), batch_axes=bad)


def test_a_directory_that_is_not_an_export_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"not a jv.export directory: it lacks exported.bin and"):
        jv.load_exported(tmp_path)
