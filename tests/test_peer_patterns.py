"""What Flax NNX, Keras and Equinox users reach for first (the porting guide's peer
table): dropout and Bernoulli draws from the stream, and Keras's stateless_call."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxvars as jv
from tests._training import adam_on_state
from tests.models import MLP


def test_dropout_eagerly_zeroes_about_rate_and_scales_the_rest():
    x = jnp.ones(10_000)
    out = jv.random.dropout(x, 0.25)
    kept = np.asarray(out) != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(np.asarray(out)[kept], 1 / 0.75)
    np.testing.assert_array_equal(jv.random.dropout(x, 0.25, deterministic=True), x)
    np.testing.assert_array_equal(jv.random.dropout(x, 0.0), x)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"rate is the probability .* in \[0, 1\)"):
            jv.random.dropout(x, bad)


def test_dropout_in_jit_draws_a_new_mask_each_step_and_advances_the_stream():
    step = jv.jit(lambda x: jv.random.dropout(x, 0.5))
    first, second = step(jnp.ones(64)), step(jnp.ones(64))
    assert not np.array_equal(first, second)
    assert step.cache_info().traces == 1


def test_dropout_under_vmap_draws_per_lane():
    masks = jv.vmap(lambda x: jv.random.bernoulli(0.5, (32,)) & (x > -1))(jnp.zeros(4))
    rows = {tuple(np.asarray(row)) for row in masks}
    assert len(rows) == 4  # each lane its own key


def test_dropout_under_remat_recomputes_the_same_mask():
    w = jv.Variable(jnp.linspace(0.5, 1.5, 16), name="w")

    def loss(wrapped):
        return jnp.sum(wrapped(lambda: jv.random.dropout(w.value * 2.0, 0.5))() ** 2)

    jv.random.set_seed(3)
    plain = jv.grad(lambda: loss(lambda f: f), [w])()[0]
    jv.random.set_seed(3)
    rematted = jv.grad(lambda: loss(jv.remat), [w])()[0]
    np.testing.assert_allclose(rematted, plain)  # the recompute saw the same mask
    assert 0 < int(jnp.sum(plain == 0)) < 16


def test_bernoulli_draws_with_probability_p():
    draws = jv.random.bernoulli(0.2, (20_000,))
    assert draws.dtype == jnp.bool_ and abs(float(draws.mean()) - 0.2) < 0.02


def test_stateless_call_ports_a_keras_jax_training_step():
    model = MLP([3, 8, 1])
    x = jnp.linspace(-1, 1, 12).reshape(4, 3)
    y = jnp.sum(x, axis=1, keepdims=True)
    _, state = jv.functional(model, x, variables=model)
    before = [np.asarray(v.value) for v in model.variables]

    def loss(state):
        out, _ = model.stateless_call(state, x)
        return jnp.mean((out - y) ** 2)

    state, losses = adam_on_state(loss, state, 20)
    assert losses[-1] < losses[0]
    for old, v in zip(before, model.variables, strict=True):
        np.testing.assert_array_equal(old, v.value)  # never changed by stateless_call
    jv.assign_state(state, model)
    assert float(jnp.mean((model(x) - y) ** 2)) < losses[0]
    with pytest.raises(ValueError, match=r"missing key 'layers/0/w'"):
        model.stateless_call({}, x)
