"""jv.Optimizer: optax with state in variables (API.md section 5)."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from models import MLP

import jaxvars as jv

X = jnp.asarray(np.random.default_rng(0).normal(size=(32, 3)), jnp.float32)
Y = jnp.sum(X, axis=1, keepdims=True)


def loss_fn(model):
    return lambda: jnp.mean((model(X) - Y) ** 2)


def test_state_lives_in_non_trainable_variables_named_by_structure():
    model = MLP([3, 8, 1])
    opt = jv.Optimizer(optax.adam(1e-3), model)
    names = list(opt.state_variables)
    assert "optimizer/0/mu/layers/0/w" in names
    assert "optimizer/0/nu/layers/1/b" in names
    assert names[-1] == "optimizer/iterations"
    assert all(v.trainable is False for v in opt.state_variables.values())
    store = jv.default_store()
    assert all(store[name] is v for name, v in opt.state_variables.items())
    with jv.Store() as fresh:
        jv.Optimizer(optax.adam(1e-3), MLP([3, 8, 1]))
    assert list(fresh) == names  # a fresh optimiser over a fresh model: same names
    assert jv.Optimizer(optax.sgd(0.1), model).state_variables  # numbered scope
    assert "optimizer_1/iterations" in store


def test_sgd_update_and_iterations():
    w = jv.Variable([1.0, 2.0], name="w")
    opt = jv.Optimizer(optax.sgd(0.5), [w])
    opt.apply_gradients([jnp.array([1.0, 1.0])])
    np.testing.assert_array_equal(w.numpy(), [0.5, 1.5])
    assert int(opt.iterations) == 1


@pytest.mark.parametrize("style", ["tuple", "pairs", "dict", "variable"])
def test_gradient_styles(style):
    a, b = jv.Variable([1.0, 1.0], name="a"), jv.Variable(2.0, name="b")
    g_a, g_b = jnp.array([1.0, 2.0]), jnp.array(4.0)
    if style == "tuple":
        opt = jv.Optimizer(optax.sgd(1.0), [a, b])
        opt.apply_gradients((g_a, g_b))
    elif style == "pairs":
        opt = jv.Optimizer(optax.sgd(1.0), [a, b])
        opt.apply_gradients(zip([g_a, g_b], [a, b], strict=True))
    elif style == "dict":
        opt = jv.Optimizer(optax.sgd(1.0), {"a": a, "b": b})
        opt.apply_gradients({"a": g_a, "b": g_b})
    else:
        opt = jv.Optimizer(optax.sgd(1.0), a)
        opt.apply_gradients(g_a)
        g_b = jnp.array(0.0)
    np.testing.assert_array_equal(a.numpy(), [0.0, -1.0])
    assert float(b) == 2.0 - float(g_b)


def test_module_gradients_from_jv_grad():
    model = MLP([3, 8, 1])
    opt = jv.Optimizer(optax.adam(1e-2), model)
    first = float(loss_fn(model)())
    for _ in range(50):
        opt.apply_gradients(jv.grad(loss_fn(model), model)())
    assert float(loss_fn(model)()) < first / 2
    assert int(opt.iterations) == 50


def test_jitted_optimizer_matches_eager_and_does_not_retrace():
    jv.random.set_seed(4)
    eager_model = MLP([3, 8, 1])
    eager_opt = jv.Optimizer(optax.adam(1e-2), eager_model)
    jv.random.set_seed(4)
    jit_model = MLP([3, 8, 1])
    jit_opt = jv.Optimizer(optax.adam(1e-2), jit_model)
    runs = []

    @jv.jit
    def step(model, x, y):
        runs.append(1)
        loss, grads = jv.value_and_grad(loss_fn(model), model)()
        jit_opt.apply_gradients(grads)
        return loss

    for _ in range(10):
        eager_opt.apply_gradients(jv.grad(loss_fn(eager_model), eager_model)())
        step(jit_model, X, Y)
    assert len(runs) == 1 and int(jit_opt.iterations) == 10
    for a, b in zip(eager_model.variables, jit_model.variables, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize(
    "tx",
    [optax.adamw(1e-1, weight_decay=0.5), optax.sgd(0.1, momentum=0.9), optax.lion(1e-2)],
    ids=["adamw", "momentum", "lion"],
)
def test_frozen_variables_and_masked_elements_stay_bit_identical(tx):
    model = MLP([3, 8, 1])
    opt = jv.Optimizer(tx, model)
    first, second = model.layers
    mask = np.zeros((3, 8), bool)
    mask[:, ::3] = True
    first.w.trainable = mask
    second.b.trainable = False
    w_before, b_before = first.w.numpy(), second.b.numpy()

    @jv.jit
    def step():
        opt.apply_gradients(jv.grad(loss_fn(model), model)())

    for _ in range(5):
        step()
    w_after = first.w.numpy()
    assert np.array_equal(w_after[~mask], w_before[~mask])  # bit-identical
    assert not np.array_equal(w_after[mask], w_before[mask])
    assert np.array_equal(second.b.numpy(), b_before)
    assert w_after.dtype == np.float32


def test_unfreezing_later_resumes_updates():
    model = MLP([3, 8, 1])
    opt = jv.Optimizer(optax.sgd(0.1), model)
    model.layers[0].b.trainable = False
    opt.apply_gradients(jv.grad(loss_fn(model), model)())
    np.testing.assert_array_equal(model.layers[0].b.numpy(), np.zeros(8))
    model.layers[0].b.trainable = True
    opt.apply_gradients(jv.grad(loss_fn(model), model)())
    assert not np.array_equal(model.layers[0].b.numpy(), np.zeros(8))


def test_errors():
    a, b = jv.Variable([1.0], name="a"), jv.Variable([1.0], name="b")
    with pytest.raises(TypeError, match="needs an optax.GradientTransformation"):
        jv.Optimizer("adam", [a])
    with pytest.raises(TypeError, match="non-empty list/tuple/dict of Variables; got list holding"):
        jv.Optimizer(optax.sgd(1.0), [a, jnp.ones(1)])
    opt = jv.Optimizer(optax.sgd(1.0), [a])
    with pytest.raises(
        ValueError, match="Expected 1 gradients .one per variable., got a list of 2"
    ):
        opt.apply_gradients([jnp.ones(1), jnp.ones(1)])
    with pytest.raises(ValueError, match="gradient for 'b', which this optimiser does not update"):
        opt.apply_gradients(zip([jnp.ones(1)], [b], strict=True))
    with pytest.raises(ValueError, match=r"gradient for variable 'a' has shape \(2,\)"):
        opt.apply_gradients([jnp.ones(2)])
    np.testing.assert_array_equal(a.numpy(), [1.0])
    assert int(opt.iterations) == 0


@pytest.mark.parametrize("container", [list, tuple, iter], ids=["list", "tuple", "iterator"])
def test_apply_gradients_takes_pairs_as_a_list_tuple_or_iterator(container):
    a = jv.Variable([1.0, 2.0], name="a")
    b = jv.Variable(3.0, name="b")
    with jv.Store():
        opt = jv.Optimizer(optax.sgd(1.0), [a, b])
    opt.apply_gradients(container([(jnp.array([0.5, 0.5]), a), (jnp.float32(1.0), b)]))
    np.testing.assert_array_equal(a.numpy(), [0.5, 1.5])
    assert float(b) == 2.0
    stranger = jv.Variable(0.0, name="stranger")
    with pytest.raises(ValueError, match="'stranger'.*does not update"):
        opt.apply_gradients([(jnp.float32(1.0), stranger)])
    assert float(b) == 2.0


def test_optimizer_repr_says_what_it_optimises():
    model = MLP([3, 4, 1])
    with jv.Store():
        opt = jv.Optimizer(optax.adam(1e-3), model)
    opt.apply_gradients(jv.grad(lambda: jnp.sum(model(jnp.ones((1, 3)))), model)())
    assert repr(opt) == (
        "<jaxvars.Optimizer 'optimizer' (optax.chain): 4 variables (21 values), "
        "9 state variables (43 values), iterations=1>"
    )
