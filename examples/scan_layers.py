"""Scan over layers: a deep residual MLP written once and scanned over 64 stacked layers.

The same model unrolled (a Python loop over 64 layers) compiles 64 copies of
the layer; jv.scan compiles one. Both give the same loss, and the stacked
model trains with gradients of the stacked shape. Compile times are printed.

Run:  python examples/scan_layers.py
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

import jaxvars as jv

DEPTH, WIDTH = 64, 32
STEPS = 5 if os.environ.get("JAXVARS_QUICK") else 50


class Deep(jv.Module):
    """``DEPTH`` residual layers whose weights are stacked on axis 0."""

    def __init__(self) -> None:
        super().__init__()
        self.w = jv.Variable(jv.random.normal((DEPTH, WIDTH, WIDTH)) * 0.02, name="w")
        self.b = jv.Variable(jnp.zeros((DEPTH, WIDTH)), name="b")

    def layer(self, h: jax.Array) -> jax.Array:
        # One layer's code: inside jv.scan, self.w and self.b are this layer's slices.
        return h + jnp.tanh(h @ self.w + self.b)

    def scanned(self, h: jax.Array) -> jax.Array:
        def step(h: jax.Array, _: None) -> tuple[jax.Array, None]:
            return self.layer(h), None

        return jv.scan(step, h, length=DEPTH, variable_axes={self: 0})[0]

    def unrolled(self, h: jax.Array) -> jax.Array:
        for i in range(DEPTH):
            h = h + jnp.tanh(h @ self.w[i] + self.b[i])
        return h


def main() -> None:
    jv.random.set_seed(0)
    model = Deep()
    x = jax.random.normal(jax.random.PRNGKey(1), (64, WIDTH))
    y = jnp.sin(x)
    opt = jv.Optimizer(optax.adam(1e-3), model)

    def train_step(forward: Callable[[jax.Array], jax.Array]) -> jax.Array:
        def loss() -> jax.Array:
            return jnp.mean((forward(x) - y) ** 2)

        value, grads = jv.value_and_grad(loss, model)()
        opt.apply_gradients(grads)
        return value

    unrolled_loss = jv.jit(lambda: jnp.mean((model.unrolled(x) - y) ** 2))
    scanned_loss = jv.jit(lambda: jnp.mean((model.scanned(x) - y) ** 2))
    for name, fn in (("unrolled", unrolled_loss), ("scanned", scanned_loss)):
        start = time.perf_counter()
        value = fn()
        print(f"{name:>9} loss {float(value):.6f}, compiled in {time.perf_counter() - start:.2f} s")

    grads = jv.grad(lambda: jnp.mean((model.scanned(x) - y) ** 2), model)()
    print(f"gradient shapes: {[tuple(g.shape) for g in grads]}")
    step = jv.jit(lambda: train_step(model.scanned))
    start = time.perf_counter()
    first = float(step())
    print(f"training step compiled in {time.perf_counter() - start:.2f} s")
    last = [float(step()) for _ in range(STEPS - 1)][-1]
    print(f"loss {first:.6f} -> {last:.6f} after {STEPS} scanned steps")
    assert last < first


if __name__ == "__main__":
    main()
