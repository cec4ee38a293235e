"""An ensemble of 8 MLPs created with jv.vmap and trained in one jitted step.

jv.vmap(lambda: MLP(...), axis_size=8, variable_axes=0)() builds 8 members,
each initialised with its own random draws, as one Module whose variables
have a leading axis of 8. Each step computes every member's loss with
jv.vmap over that axis, and the optimiser updates all members at once. The
ensemble's prediction averages the members' class probabilities.

Run:  python examples/ensemble.py
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxvars as jv

MEMBERS = 8
STEPS = 60 if os.environ.get("JAXVARS_QUICK") else 400


class Dense(jv.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.w = jv.Variable(jv.random.normal((n_in, n_out)) * np.sqrt(2.0 / n_in), name="w")
        self.b = jv.Variable(jnp.zeros(n_out), name="b")

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.w + self.b


class MLP(jv.Module):
    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.layers = [Dense(m, n) for m, n in zip(sizes[:-1], sizes[1:], strict=True)]

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


def two_moons(n: int = 400, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, np.pi, n)
    upper = np.stack([np.cos(angle), np.sin(angle)], 1)
    lower = np.stack([1 - np.cos(angle), 0.5 - np.sin(angle)], 1)
    x = np.concatenate([upper, lower]) + rng.normal(scale=0.15, size=(2 * n, 2))
    return jnp.asarray(x, jnp.float32), jnp.asarray(np.repeat([0, 1], n))


def main() -> None:
    jv.random.set_seed(0)
    x, y = two_moons()
    ensemble = jv.vmap(lambda: MLP([2, 32, 2]), axis_size=MEMBERS, variable_axes=0)()
    print(f"{MEMBERS} members, variables {[tuple(v.shape) for v in ensemble.variables]}")
    opt = jv.Optimizer(optax.adam(1e-2), ensemble)

    def member_logits() -> jax.Array:
        return jv.vmap(lambda: ensemble(x), axis_size=MEMBERS, variable_axes={ensemble: 0})()

    def member_losses() -> jax.Array:
        logits = member_logits()  # (members, points, classes)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y[None]), axis=1)

    def total_loss() -> tuple[jax.Array, jax.Array]:
        losses = member_losses()
        return losses.sum(), losses  # summed, each member's gradient is its own

    @jv.jit
    def step() -> jax.Array:
        (_, losses), grads = jv.value_and_grad(total_loss, ensemble, has_aux=True)()
        opt.apply_gradients(grads)
        return losses

    losses = [step() for _ in range(STEPS)][-1]
    for i, loss in enumerate(np.asarray(losses)):
        print(f"member {i}: loss {loss:.4f}")
    probabilities = jax.nn.softmax(jv.jit(member_logits)(), axis=-1).mean(axis=0)
    accuracy = float((probabilities.argmax(-1) == y).mean())
    print(f"ensemble accuracy {accuracy:.1%}")
    assert accuracy > 0.85


if __name__ == "__main__":
    main()
