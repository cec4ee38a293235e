"""Scan over a stacked Module: jv.scan(f, x, self.blocks) against raw lax.scan and NNX.

16 blocks of tanh(Dense(128, 128)), stacked on a leading axis: in jaxvars by
``jv.vmap(Block, axis_size=16, variable_axes=0)()`` and scanned as
``jv.scan(lambda h, block: (block(h), None), x, self.blocks)``; in raw JAX as a
dict of stacked arrays through ``jax.lax.scan``; in Flax NNX by ``nnx.vmap``
over the constructor and ``nnx.scan(..., in_axes=(nnx.Carry, 0))``. Each
contender runs one Adam training step per call (donated where it can be).
Interleaved medians, the same process.

Run: pip install -e ".[bench]" && python benchmarks/scan_modules.py [--quick]
Target: jv.scan within 1.05x raw.
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import optax
from _timing import interleaved_medians, report

import jaxvars as jv

WIDTH, DEPTH, BATCH = 128, 16, 32


def mse(prediction, target):
    return jnp.mean((prediction - target) ** 2)


def raw_contender(x, y):
    key = jax.random.PRNGKey(0)
    params = {
        "w": jax.random.normal(key, (DEPTH, WIDTH, WIDTH)) / WIDTH**0.5,
        "b": jnp.zeros((DEPTH, WIDTH)),
    }
    tx = optax.adam(1e-3)

    def forward(params, x):
        def layer(h, p):
            return jnp.tanh(h @ p["w"] + p["b"]), None

        return jax.lax.scan(layer, x, params)[0]

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(lambda p: mse(forward(p, x), y))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    state = [params, tx.init(params)]

    def run():
        state[0], state[1], loss = step(state[0], state[1], x, y)
        loss.block_until_ready()

    return run


class Block(jv.Module):
    def __init__(self):
        super().__init__()
        self.w = jv.Variable(jv.random.normal((WIDTH, WIDTH)) / WIDTH**0.5, name="w")
        self.b = jv.Variable(jnp.zeros(WIDTH), name="b")

    def __call__(self, h):
        return jnp.tanh(h @ self.w + self.b)


class Deep(jv.Module):
    def __init__(self):
        super().__init__()
        self.blocks = jv.vmap(Block, axis_size=DEPTH, variable_axes=0)()

    def __call__(self, x):
        return jv.scan(lambda h, block: (block(h), None), x, self.blocks)[0]


def jaxvars_contender(x, y):
    model = Deep()
    opt = jv.Optimizer(optax.adam(1e-3), model)

    @jv.jit
    def step(x, y):
        loss, grads = jv.value_and_grad(lambda: mse(model(x), y), model)()
        opt.apply_gradients(grads)
        return loss

    def run():
        step(x, y).block_until_ready()

    return run, step


def nnx_contender(x, y):
    try:
        from flax import nnx
    except ImportError:
        return None

    class NNXBlock(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(WIDTH, WIDTH, rngs=rngs)

        def __call__(self, h):
            return jnp.tanh(self.linear(h))

    @nnx.split_rngs(splits=DEPTH)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
        return NNXBlock(rngs)

    class NNXDeep(nnx.Module):
        def __init__(self, rngs):
            self.blocks = create(rngs)

        def __call__(self, x):
            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
            def forward(h, block):
                return block(h)

            return forward(x, self.blocks)

    model = NNXDeep(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: mse(m(x), y))(model)
        optimizer.update(model, grads)
        return loss

    def run():
        step(model, optimizer, x, y).block_until_ready()

    return run


def main() -> None:
    quick = "--quick" in sys.argv
    x = jax.random.normal(jax.random.PRNGKey(1), (BATCH, WIDTH))
    y = jnp.zeros((BATCH, WIDTH))
    jv_run, jv_step = jaxvars_contender(x, y)
    contenders = {"raw jax.lax.scan + optax": raw_contender(x, y), "jv.scan over blocks": jv_run}
    nnx_run = nnx_contender(x, y)
    if nnx_run is not None:
        contenders["nnx.scan over blocks"] = nnx_run
    medians = interleaved_medians(contenders, rounds=5 if quick else 25, calls=5 if quick else 50)
    title = f"{DEPTH} stacked blocks of width {WIDTH}, batch {BATCH}: one training step"
    report(title, medians, baseline="raw jax.lax.scan + optax")
    print(f"  jv step traces: {jv_step.cache_info().traces}")


if __name__ == "__main__":
    main()
