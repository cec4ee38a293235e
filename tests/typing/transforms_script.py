"""Types kept through every jaxvars transform: realistic user code that also runs.

tests/test_typing.py runs mypy --strict and pyright on this file (no error
allowed) and runs it: each ``assert_type`` states the type a user relies on
after a transform (a no-op at run time).
"""

from __future__ import annotations

from typing import assert_type

import jax
import jax.numpy as jnp
import optax

import jaxvars as jv


class Dense(jv.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.w = jv.Variable(jv.random.normal((n_in, n_out)) * 0.1, name="w")
        self.b = jv.Variable(jnp.zeros(n_out), name="b")

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.w + self.b


class Tower(jv.Module):
    """``depth`` square layers stacked on axis 0: one layer's code, scanned."""

    def __init__(self, depth: int, width: int) -> None:
        super().__init__()
        self.w = jv.Variable(jv.random.normal((depth, width, width)) * 0.1, name="w")

    def __call__(self, h: jax.Array) -> jax.Array:
        def layer(h: jax.Array, _: None) -> tuple[jax.Array, jax.Array]:
            h = jnp.tanh(h @ self.w)
            return h, h.mean()

        out, means = jv.scan(layer, h, length=self.w.shape[0], variable_axes={self: 0})
        assert_type(means, jax.Array)
        return out


jv.random.set_seed(0)
x = jnp.ones((2, 3))

# eval_shape: the model itself, with abstract variables (shapes, no values).
abstract = jv.eval_shape(lambda: Dense(3, 4))
assert_type(abstract, Dense)
assert abstract.w.is_abstract and abstract.w.shape == (3, 4)
assert_type(jv.eval_shape(lambda: [Dense(3, 4), Dense(4, 1)]), list[Dense])

# vmap: an ensemble of models, and a function mapped over a batch.
ensemble = jv.vmap(lambda: Dense(3, 4), axis_size=5, variable_axes=0)()
assert_type(ensemble, Dense)
assert ensemble.w.shape == (5, 3, 4)
model = Dense(3, 4)
assert_type(jv.vmap(model)(x), jax.Array)

# remat keeps the signature and the result type.
checkpointed = jv.remat(model)
assert_type(checkpointed(x), jax.Array)

# cond and switch return what their branches return.
chosen = jv.cond(True, lambda: model, lambda: Dense(3, 4))
assert_type(chosen, Dense)
assert chosen is model
assert_type(jv.cond(x.sum() > 0, lambda: model(x), lambda: -model(x)), jax.Array)
assert_type(jv.switch(1, [lambda: model(x), lambda: 2 * model(x)]), jax.Array)

# Loops return their carry's type; scan returns (carry, stacked outputs).
steps = jv.Variable(0, name="steps", trainable=False)


def count(i: jax.Array) -> jax.Array:
    steps.assign_add(1)
    return i + 1


assert_type(jv.while_loop(lambda i: i < 3, count, jnp.array(0)), jax.Array)
total = jv.fori_loop(0, 3, lambda i, acc: acc + model(x).sum(), jnp.zeros(()))
assert_type(total, jax.Array)
carry, outputs = jv.scan(lambda c, xi: (c + xi, c * xi), jnp.zeros(()), jnp.arange(3.0))
assert_type(carry, jax.Array)
assert_type(outputs, jax.Array)
tower = Tower(depth=4, width=3)
assert_type(tower(x), jax.Array)


# Gradients take wrt's structure: an array per variable.
def loss() -> jax.Array:
    return jnp.mean(model(x) ** 2)


def loss_and_logits() -> tuple[jax.Array, jax.Array]:
    logits = model(x)
    return jnp.mean(logits**2), logits


assert_type(jv.grad(loss, model.w)(), jax.Array)
assert_type(jv.grad(loss, model)(), tuple[jax.Array, ...])
assert_type(jv.grad(loss, [model.w, model.b])(), list[jax.Array])
assert_type(jv.grad(loss, {"w": model.w})(), dict[str, jax.Array])
grads, logits = jv.grad(loss_and_logits, model, has_aux=True)()
assert_type(grads, tuple[jax.Array, ...])
assert_type(logits, jax.Array)
(value, aux), wgrad = jv.value_and_grad(loss_and_logits, model.w, has_aux=True)()
assert_type(value, jax.Array)
assert_type(wgrad, jax.Array)

# All of it inside jv.jit, which keeps the step's signature.
opt = jv.Optimizer(optax.sgd(0.1), model)


@jv.jit
def train_step(batch: jax.Array) -> jax.Array:
    def batch_loss() -> jax.Array:
        per_example = jv.vmap(model)(batch)
        return jnp.mean(jv.remat(jnp.square)(per_example))

    value, grads = jv.value_and_grad(batch_loss, model)()
    assert_type(grads, tuple[jax.Array, ...])
    opt.apply_gradients(grads)
    return value


assert_type(train_step(x), jax.Array)
print(f"loss {float(train_step(x)):.4f}, {int(steps)} loop steps, aux {aux.shape}")
