"""Placement and sharding (API.md section 7), on 8 forced host CPU devices."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxvars as jv

CPU = jax.devices()


@pytest.fixture
def mesh():
    return Mesh(np.array(CPU).reshape(4, 2), ("data", "model"))


@pytest.mark.parametrize(
    "spec, index",
    [
        ("cpu", 0),
        ("CPU:3", 3),
        ("cpu:7", 7),
        ("/device:CPU:2", 2),
        ("/cpu:1", 1),
        ("/job:localhost/replica:0/task:0/device:CPU:4", 4),
    ],
)
def test_device_strings_and_variables_created_inside(spec, index):
    with jv.device(spec) as placed:
        v = jv.Variable([1.0, 2.0])
        w = jv.get_variable("w", (2,))
    assert placed == CPU[index]
    assert v.device == CPU[index] and v.value.committed
    assert w.device == CPU[index]


def test_device_objects_and_default_placement():
    with jv.device(CPU[5]):
        assert jv.Variable(0.0).device == CPU[5]
        assert jnp.ones(2).devices() == {CPU[5]}  # uncommitted computations default there
    v = jv.Variable(0.0)
    assert v.device == jax.devices()[0] and not v.value.committed


def test_expressions_compute_on_the_device_copying_operands():
    with jv.device("cpu:0"):
        a = jv.Variable([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    with jv.device("cpu:2"):
        b = jv.Variable([[1.0, 2.0, 3.0]])
    with jv.device("cpu:5"):
        k = a * b
        k2 = 2.0 * a
        k3 = -b
        k4 = a + jax.device_put(jnp.ones(3), CPU[6])
    for result in (k, k2, k3, k4):
        assert result.devices() == {CPU[5]}
    np.testing.assert_array_equal(k, [[1, 4, 9], [4, 10, 18]])
    assert a.device == CPU[0] and b.device == CPU[2]  # the variables stay put


def test_the_seed_matmul_on_cpu():
    with jv.device("CPU:0"):
        a = jv.Variable([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        b = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
        c = jnp.matmul(a, b)
    np.testing.assert_array_equal(c, [[22, 28], [49, 64]])


def test_log_device_placement(caplog):
    jv.set_log_device_placement(True)
    try:
        with caplog.at_level(logging.INFO, logger="jaxvars"):
            with jv.device("cpu:1"):
                a = jv.Variable([1.0], name="a")
                _ = a * 2
    finally:
        jv.set_log_device_placement(False)
    messages = [r.getMessage() for r in caplog.records]
    assert "Variable 'a' created on cpu:1" in messages
    assert "mul('a', int) runs on cpu:1" in messages
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="jaxvars"):
        _ = jv.Variable([1.0], name="quiet") + 1
    assert caplog.records == []


def test_soft_placement_warns_each_time_and_hard_placement_raises(caplog):
    with caplog.at_level(logging.WARNING, logger="jaxvars"):
        for _ in range(2):
            with jv.device("GPU:0"):
                v = jv.Variable(1.0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "'GPU:0' does not exist" in warnings[0].getMessage()
    assert v.device == jax.devices()[0] and v.value.committed
    jv.config.soft_device_placement = False
    try:
        with pytest.raises(
            ValueError, match=r"'GPU:0' does not exist; available devices: cpu:0, cpu:1"
        ):
            with jv.device("GPU:0"):
                pass
    finally:
        jv.config.soft_device_placement = True


@pytest.mark.parametrize("bad", ["gpu-0", "cpu:", "device:", ""])
def test_malformed_specs_say_the_accepted_forms(bad):
    with pytest.raises(ValueError, match='Malformed device spec.*"cpu:0", "GPU:0"'):
        with jv.device(bad):
            pass
    with pytest.raises(TypeError, match="got int"):
        with jv.device(3):
            pass


def test_sharding_rules_by_name(mesh):
    class Dense(jv.Module):
        def __init__(self):
            super().__init__()
            self.w = jv.Variable(np.ones((4, 8), np.float32), name="w")
            self.b = jv.Variable(np.zeros(8, np.float32), name="b")

    rules = [(r"dense/w$", PartitionSpec(None, "model")), (r"/b$", PartitionSpec("model"))]
    with jv.sharding_rules(rules, mesh):
        layer = Dense()
        with jv.variable_scope("tf1"):
            table = jv.get_variable("embedding", (8, 4))
        explicit = jv.Variable(np.ones(8), sharding=NamedSharding(mesh, PartitionSpec("data")))
    assert layer.w.sharding == NamedSharding(mesh, PartitionSpec(None, "model"))
    assert layer.b.sharding.spec == PartitionSpec("model")
    assert table.sharding.spec == PartitionSpec()  # unmatched: replicated over the mesh
    assert explicit.sharding.spec == PartitionSpec("data")
    assert jv.Variable(1.0).sharding != layer.w.sharding  # the rules end with the block


def test_sharding_rules_errors(mesh):
    with pytest.raises(TypeError, match="must map to a PartitionSpec, got tuple"):
        with jv.sharding_rules({"w": (None, "model")}, mesh):
            pass
    with pytest.raises(ValueError, match="bad pattern '\\('"):
        with jv.sharding_rules({"(": PartitionSpec()}, mesh):
            pass
    with pytest.raises(TypeError, match="needs a jax.sharding.Mesh"):
        with jv.sharding_rules({}, "mesh"):
            pass


def test_jit_fori_loop_and_optimizer_keep_every_sharding(mesh):
    class Dense(jv.Module):
        def __init__(self):
            super().__init__()
            self.w = jv.Variable(jv.random.normal((4, 8)) * 0.1, name="w")
            self.b = jv.Variable(jnp.zeros(8), name="b")

        def __call__(self, x):
            return x @ self.w + self.b

    with jv.sharding_rules({r"/w$": PartitionSpec(None, "model")}, mesh):
        model = Dense()
        opt = jv.Optimizer(optax.adam(1e-2), model)
    x = jax.device_put(jnp.ones((16, 4)), NamedSharding(mesh, PartitionSpec("data")))
    shardings = {v.name: v.sharding for v in (*model.variables, *opt.state_variables.values())}
    assert opt.state_variables["optimizer/0/mu/w"].sharding == model.w.sharding

    def train_step():
        loss, grads = jv.value_and_grad(lambda: jnp.mean(model(x) ** 2), model)()
        opt.apply_gradients(grads)
        return loss

    step = jv.jit(train_step)
    first = step()
    step()
    jv.jit(lambda: jv.fori_loop(0, 3, lambda i, c: train_step(), jnp.zeros(())))()
    model.w.assign(model.w.value * 1.0)
    assert float(step()) < float(first)
    for v in (*model.variables, *opt.state_variables.values()):
        assert v.sharding == shardings[v.name], v.name
    assert int(opt.iterations) == 6
