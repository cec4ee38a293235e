"""jv.functional and jv.assign_state (API.md section 13): the pure form of a stateful function."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxvars as jv
from tests._training import adam_on_state
from tests.models import MLP, Dense


def _values(variables):
    return [np.asarray(v.value) for v in variables]


def test_state_keys_are_the_checkpoint_keys_of_a_module():
    model = MLP([3, 4, 2])
    pure, state = jv.functional(model, jnp.ones((1, 3)))
    assert list(state) == ["layers/0/w", "layers/0/b", "layers/1/w", "layers/1/b"]
    assert list(state) == list(model.named_variables())  # as jv.save(path, model) keys them
    out, new = pure(state, jnp.ones((1, 3)))
    np.testing.assert_allclose(out, model(jnp.ones((1, 3))), rtol=1e-6)
    assert list(new) == list(state)


def test_a_function_is_keyed_by_variable_names_and_never_touches_the_variables():
    count = jv.Variable(0, name="count")
    w = jv.Variable(jnp.arange(3.0), name="scale/w")

    def step(x):
        count.assign_add(1)
        return x * w

    pure, state = jv.functional(step, jnp.ones(3))
    assert set(state) == {"count", "scale/w"}
    state = {**state, "scale/w": jnp.full(3, 2.0)}
    out, new = jax.jit(pure)(state, jnp.ones(3))
    assert out.tolist() == [2.0, 2.0, 2.0]
    assert int(new["count"]) == 1 and new["scale/w"].tolist() == [2.0, 2.0, 2.0]
    assert int(count.value) == 0 and w.value.tolist() == [0.0, 1.0, 2.0]  # never changed


def test_pure_under_jax_grad_trains_like_jv_grad():
    model = MLP([3, 4, 1])
    x, y = jnp.ones((5, 3)), jnp.zeros((5, 1))
    pure, state = jv.functional(model, x)

    def loss(state):
        out, _ = pure(state, x)
        return jnp.mean((out - y) ** 2)

    grads = jax.grad(loss)(state)
    expected = jv.grad(lambda: jnp.mean((model(x) - y) ** 2), model)()
    expected = dict(zip(model.named_variables(), expected, strict=True))
    assert set(grads) == set(expected)
    for key, g in grads.items():
        np.testing.assert_allclose(g, expected[key], rtol=1e-5)

    # optax takes the state dict as it is
    tx = optax.sgd(0.1)
    updates, _ = tx.update(grads, tx.init(state))
    trained = optax.apply_updates(state, updates)
    jv.assign_state(trained, model)
    assert loss(jv.functional(model, x)[1]) < loss(state)


def test_pure_under_vmap_and_scan():
    total = jv.Variable(0.0, name="total")

    def add(x):
        total.assign_add(jnp.sum(x))
        return total.value

    pure, state = jv.functional(add, jnp.ones(2))
    # vmap over the inputs, one shared state
    outs, news = jax.vmap(pure, in_axes=(None, 0))(state, jnp.arange(6.0).reshape(3, 2))
    assert outs.tolist() == [1.0, 5.0, 9.0] and news["total"].tolist() == [1.0, 5.0, 9.0]

    # scan threads the state as its carry
    def body(state, x):
        out, state = pure(state, x)
        return state, out

    final, outs = jax.lax.scan(body, state, jnp.ones((4, 2)))
    assert outs.tolist() == [2.0, 4.0, 6.0, 8.0] and float(final["total"]) == 8.0
    assert float(total.value) == 0.0


def test_pure_under_shard_map():
    mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
    scale = jv.Variable(jnp.float32(3.0), name="scale")
    pure, state = jv.functional(lambda x: x * scale, jnp.ones(8))
    spec = PartitionSpec("data")
    mapped = jax.shard_map(
        lambda s, x: pure(s, x)[0],
        mesh=mesh,
        in_specs=(PartitionSpec(), spec),
        out_specs=spec,
    )
    x = jax.device_put(jnp.arange(8.0), NamedSharding(mesh, spec))
    assert jax.jit(mapped)(state, x).tolist() == (3.0 * np.arange(8.0)).tolist()


def test_pure_exports_with_jax_export():
    model = Dense(3, 2)
    pure, state = jv.functional(model, jnp.ones((1, 3)))
    exported = jax.export.export(jax.jit(pure))(state, jax.ShapeDtypeStruct((1, 3), jnp.float32))
    restored = jax.export.deserialize(exported.serialize())
    out, _ = restored.call(state, jnp.ones((1, 3)))
    np.testing.assert_allclose(out, model(jnp.ones((1, 3))), rtol=1e-6)


def test_explicit_variables_and_a_returned_variable():
    a = jv.Variable(1.0, name="a")
    b = jv.Variable(2.0, name="b")

    def fn():
        b.assign(a * 10)
        return b

    pure, state = jv.functional(fn, variables={"first": a, "second": b})
    assert list(state) == ["first", "second"]
    out, new = pure(state)
    assert float(out) == 10.0 and float(new["second"]) == 10.0 and float(new["first"]) == 1.0
    assert float(b.value) == 2.0


def test_pure_refuses_a_state_that_does_not_fit():
    w = jv.Variable(jnp.zeros(3), name="w")
    pure, state = jv.functional(lambda: w * 2)
    with pytest.raises(ValueError, match=r"missing key 'w'"):
        pure({})
    with pytest.raises(ValueError, match=r"unexpected key 'v'"):
        pure({**state, "v": jnp.zeros(3)})
    with pytest.raises(ValueError, match=r"'w': shape \(2,\) in the state, \(3,\)"):
        pure({"w": jnp.zeros(2)})
    with pytest.raises(ValueError, match=r"'w': dtype int32 in the state, float32"):
        pure({"w": jnp.zeros(3, jnp.int32)})
    with pytest.raises(TypeError, match="state dict"):
        pure([jnp.zeros(3)])


def test_pure_refuses_a_variable_outside_its_state():
    a = jv.Variable(1.0, name="a")
    b = jv.Variable(2.0, name="b")
    pure, _ = jv.functional(lambda: a + b, variables=[a])
    with pytest.raises(ValueError, match=r"touched 'b', which the state does not hold"):
        pure({"a": jnp.float32(1.0)})


def test_a_function_that_creates_variables_is_refused():
    def creates(x):
        return x * jv.Variable(2.0, name="fresh")

    with pytest.raises(ValueError, match=r"creates variable 'fresh' when called.*outside"):
        jv.functional(creates, jnp.ones(2))


def test_a_model_building_itself_on_its_first_call_is_built_by_the_pass():
    class Lazy(jv.Module):
        def __call__(self, x):
            if not hasattr(self, "k"):
                self.k = jv.get_variable("k", shape=(x.shape[-1], 3), initializer=jnp.ones)
            return x @ self.k

    model = Lazy()
    pure, state = jv.functional(model, jax.ShapeDtypeStruct((1, 2), jnp.float32))
    assert list(state) == ["k"] and state["k"].shape == (2, 3)
    assert pure(state, jnp.ones((1, 2)))[0].tolist() == [[2.0, 2.0, 2.0]]
    assert model(jnp.ones((1, 2))).tolist() == [[2.0, 2.0, 2.0]]  # built, and usable


def test_two_variables_with_one_name_need_explicit_keys():
    a, b = jv.Variable(1.0, name="same"), jv.Variable(2.0, name="same")
    with pytest.raises(ValueError, match=r"share the key 'same'.*variables="):
        jv.functional(lambda: a + b)


def test_example_arguments_can_be_shape_dtype_structs():
    model = Dense(3, 2)
    pure, state = jv.functional(model, jax.ShapeDtypeStruct((7, 3), jnp.float32))
    assert pure(state, jnp.ones((2, 3)))[0].shape == (2, 2)


def test_assign_state_checks_everything_before_assigning_anything():
    model = MLP([2, 3, 1])
    before = _values(model.variables)
    _, state = jv.functional(model, jnp.ones((1, 2)))
    bad = {key: value + 1 for key, value in state.items()}
    bad["layers/1/b"] = jnp.zeros(5)
    bad["layers/9/w"] = jnp.zeros(1)
    with pytest.raises(ValueError) as info:
        jv.assign_state(bad, model)
    message = str(info.value)
    assert "'layers/1/b': shape (5,) in the state, (1,) in the variable" in message
    assert "unexpected key 'layers/9/w'" in message
    assert "nothing was assigned" in message
    for old, new in zip(before, _values(model.variables), strict=True):
        np.testing.assert_array_equal(old, new)  # nothing changed
    with pytest.raises(ValueError, match=r"'layers/0/w': dtype int32 in the state"):
        jv.assign_state({"layers/0/w": jnp.zeros((2, 3), jnp.int32)}, model)


def test_assign_state_of_a_part_keeps_the_rest():
    model = MLP([2, 3, 1])
    kept = np.asarray(model.layers[1].w.value)
    jv.assign_state({"layers/0/b": jnp.full(3, 7.0)}, model)
    assert model.layers[0].b.value.tolist() == [7.0, 7.0, 7.0]
    np.testing.assert_array_equal(model.layers[1].w.value, kept)
    with pytest.raises(TypeError, match="dict of values"):
        jv.assign_state([jnp.zeros(3)], model)


def test_functional_round_trip_trains_inside_jax_jit():
    model = MLP([3, 8, 1])
    x = jnp.linspace(-1, 1, 12).reshape(4, 3)
    y = jnp.sum(x, axis=1, keepdims=True)
    pure, state = jv.functional(model, x)
    state, losses = adam_on_state(lambda s: jnp.mean((pure(s, x)[0] - y) ** 2), state, 30)
    assert losses[-1] < losses[0] / 2
    jv.assign_state(state, model)
    np.testing.assert_allclose(jnp.mean((model(x) - y) ** 2), losses[-1], rtol=0.2)
