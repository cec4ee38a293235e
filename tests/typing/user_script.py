"""A short, realistic user script that type checkers must accept as it is.

tests/test_typing.py runs pyright on this file: every line here is one a
user writes, and none may be reported as an error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import jaxvars as jv


class Dense(jv.Module):
    def __init__(self, n_in: int, n_out: int, name: str | None = None):
        super().__init__(name=name)
        self.w = jv.Variable(jv.random.normal((n_in, n_out)) * 0.1, name="w")
        self.b = jv.Variable(jnp.zeros(n_out), name="b")

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.w + self.b


class MLP(jv.Module):
    def __init__(self, first: Dense, second: Dense):
        super().__init__()
        self.first = first
        self.second = second

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.second(jax.nn.relu(self.first(x)))


def widths(layer: Dense) -> tuple[int, ...]:
    return layer.w.shape


layer = Dense(3, 4)  # a Dense, not just a Module
model = MLP(layer, Dense(4, 1))
print(widths(model.first), model.second.b.dtype)

v = jv.Variable([1.0, 2.0, 3.0], name="v")
x = jnp.ones((2, 3))
total: jax.Array = x @ jv.Variable(jnp.eye(3)) + v + 1.0
scaled: jax.Array = 2.0 * v - v / 2 + (-v) + abs(v) + v**2
same: jax.Array = v == v  # elementwise, an array
bigger: jax.Array = v > 1.5
v += 1.0
v.assign(v * 0.5).assign_add(1.0)

opt = jv.Optimizer(optax.adam(1e-2), model)


@jv.jit
def step(x: jax.Array, y: jax.Array) -> jax.Array:
    loss, grads = jv.value_and_grad(lambda: jnp.mean((model(x) - y) ** 2), model)()
    opt.apply_gradients(grads)
    return loss


loss: jax.Array = step(x, jnp.zeros((2, 1)))
print(float(loss), float(total.sum()), float(scaled.sum()), bool(same.all()), bigger)

# Peers' whole-model patterns: part of a model, frozen layers, eval mode, templates.
head_opt = jv.Optimizer(optax.sgd(0.1), model, wrt=[model.second])
model.first.trainable = False
frozen: bool | str = model.first.trainable
model.eval().train()
updated: dict[str, jv.Variable] = head_opt.trainable_variables


def tower(h: jax.Array, scale: float) -> jax.Array:
    return h * jv.get_variable("k", initializer=scale)


template = jv.make_template("tower", tower)
towered: jax.Array = template(x, 2.0)
print(frozen, sorted(updated), [w.name for w in template.trainable_variables], towered.shape)
