"""A small training run shared by the single- and multi-process distributed tests."""

import numpy as np


def global_batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = np.sin(x[:, :3].sum(axis=1, keepdims=True)).astype(np.float32)
    return x, y


def train(x, y, rules=None, mesh=None, steps=5):
    """Train an MLP with jv.jit; returns the losses and {path: host array}."""
    import jax.numpy as jnp
    import optax
    from models import MLP

    import jaxvars as jv

    jv.random.set_seed(0)
    with jv.Store():
        if rules is None:
            model = MLP([8, 32, 1], scale=0.3)
            opt = jv.Optimizer(optax.adam(1e-2), model)
        else:
            with jv.sharding_rules(rules, mesh):
                model = MLP([8, 32, 1], scale=0.3)
                opt = jv.Optimizer(optax.adam(1e-2), model)

        @jv.jit
        def step(model, x, y):
            loss, grads = jv.value_and_grad(lambda: jnp.mean((model(x) - y) ** 2), model)()
            opt.apply_gradients(grads)
            return loss

        losses = [np.asarray(step(model, x, y).addressable_data(0)) for _ in range(steps)]
        variables = {
            path.replace("/", "."): np.asarray(v.value.addressable_data(0))
            for path, v in model.named_variables().items()
        }
    return np.array(losses), variables


def adam_on_state(loss, state, steps, learning_rate=1e-2):
    """Train a pure state dict with raw ``jax.jit`` + ``optax.adam``, as code written
    for pure JAX does; returns the final state and the losses."""
    import jax
    import optax

    tx = optax.adam(learning_rate)

    @jax.jit
    def step(state, opt_state):
        value, grads = jax.value_and_grad(loss)(state)
        updates, opt_state = tx.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state, value

    opt_state, losses = tx.init(state), []
    for _ in range(steps):
        state, opt_state, value = step(state, opt_state)
        losses.append(float(value))
    return state, losses
