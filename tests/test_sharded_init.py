"""Sharded initialisation (API.md section 11): callables computed shard by shard."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _processes import run_two_processes
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxvars as jv

WORKER = os.path.join(os.path.dirname(__file__), "_sharded_worker.py")


@pytest.fixture
def mesh():
    return Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))


def single_device_reference():
    """The same variables, made on one device from the same seed."""
    jv.random.set_seed(0)
    with jv.Store():
        w = jv.get_variable("w", (8, 6), initializer=jax.nn.initializers.normal(1.0))
        b = jv.Variable(lambda: jv.random.uniform((6,)), name="b")
        after = jv.random.normal((3,))
    return {"w": w.numpy(), "b": b.numpy(), "after": np.asarray(after)}


def test_sharded_callables_equal_a_single_device_initialisation(mesh):
    reference = single_device_reference()
    jv.random.set_seed(0)
    rules = {"w": PartitionSpec("data", "model"), "b": PartitionSpec("model")}
    with jv.sharding_rules(rules, mesh):
        w = jv.get_variable("w", (8, 6), initializer=jax.nn.initializers.normal(1.0))
        b = jv.Variable(lambda: jv.random.uniform((6,)), name="b")
    after = jv.random.normal((3,))
    assert w.sharding == NamedSharding(mesh, PartitionSpec("data", "model"))
    assert b.sharding == NamedSharding(mesh, PartitionSpec("model"))
    np.testing.assert_array_equal(w.numpy(), reference["w"])
    np.testing.assert_array_equal(b.numpy(), reference["b"])
    np.testing.assert_array_equal(after, reference["after"])  # the stream moved the same


def test_a_sharded_initial_value_is_one_computation_with_that_output_sharding(mesh):
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    jitted = []
    real_jit = jax.jit

    def spy(fn, **kwargs):
        jitted.append(kwargs.get("out_shardings"))
        return real_jit(fn, **kwargs)

    jax.jit = spy
    try:
        v = jv.Variable(lambda: jnp.arange(16.0).reshape(8, 2) * 2, sharding=sharding, name="v")
    finally:
        jax.jit = real_jit
    assert jitted and jitted[0][0] == sharding
    assert v.sharding == sharding and v.numpy()[7, 1] == 30.0
    # Each device holds its own two rows, computed there.
    assert {tuple(s.data.shape) for s in v.value.addressable_shards} == {(2, 2)}


def test_a_dtype_cast_and_an_abstract_pass_keep_working(mesh):
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    v = jv.Variable(lambda: jnp.ones((8, 2)), sharding=sharding, dtype=jnp.bfloat16)
    assert v.dtype == jnp.bfloat16 and v.sharding == sharding
    abstract = jv.eval_shape(lambda: jv.Variable(lambda: jnp.ones((8, 2)), sharding=sharding))
    assert abstract.is_abstract and abstract.shape == (8, 2)


def test_an_initial_value_function_may_not_assign_other_variables(mesh):
    other = jv.Variable(0.0, name="other")
    sharding = NamedSharding(mesh, PartitionSpec("data"))

    def init():
        other.assign(1.0)
        return jnp.zeros(8)

    with pytest.raises(ValueError, match="initial value function of variable 'v' assigns"):
        jv.Variable(init, sharding=sharding, name="v")
    assert float(other) == 0.0


def test_two_processes_each_compute_only_their_shards(tmp_path):
    reference = single_device_reference()
    results = run_two_processes(WORKER, tmp_path)
    for name in ("w", "b"):
        rebuilt = np.full(reference[name].shape, np.nan, np.float32)
        for result in results:
            # Two devices per process: two shards of w; b's shards repeat over "data".
            assert int(result[f"{name}/count"]) == 2
            for i in range(2):
                (starts, stops) = result[f"{name}/{i}/index"]
                index = tuple(slice(a, z) for a, z in zip(starts, stops, strict=True))
                np.testing.assert_array_equal(result[f"{name}/{i}/data"], reference[name][index])
                rebuilt[index] = result[f"{name}/{i}/data"]
        np.testing.assert_array_equal(rebuilt, reference[name])  # together: the whole value
    for result in results:
        np.testing.assert_array_equal(result["after"], reference["after"])


def test_two_processes_save_their_shards_and_restore_onto_another_mesh(tmp_path):
    """No gather: reading a value spanning both processes would fail in either."""
    reference = single_device_reference()
    checkpoints = tmp_path / "checkpoints"
    results = run_two_processes(WORKER, tmp_path, extra=[str(checkpoints)])
    written = {p.name for p in (checkpoints / "1" / "default").iterdir()}
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= written  # each process wrote its own
    for name, per_process in (("w", 2), ("b", 2)):
        rebuilt = np.full(reference[name].shape, np.nan, np.float32)
        for result in results:
            assert int(result[f"{name}/count"]) == per_process
            for i in range(per_process):
                (starts, stops) = result[f"{name}/{i}/index"]
                index = tuple(slice(a, z) for a, z in zip(starts, stops, strict=True))
                np.testing.assert_array_equal(result[f"{name}/{i}/data"], reference[name][index])
                rebuilt[index] = result[f"{name}/{i}/data"]
        np.testing.assert_array_equal(rebuilt, reference[name])
    assert all(result["w/0/data"].shape == (2, 6) for result in results)  # the new layout
