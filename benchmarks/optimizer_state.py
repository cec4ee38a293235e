"""Optimizer state for a BatchNorm model: what jv.Optimizer keeps, against naive optax and NNX.

The model is 8 blocks of Dense(512, 512) + BatchNorm(512) and a head: a scale
and a bias that train, a running mean and variance that don't (float32), and
an int32 counter per BatchNorm. Adam's state is counted in bytes for:

- ``jv.Optimizer(optax.adam, model)``: the default ``wrt="trainable"``;
- ``jv.Optimizer(..., wrt="head/")``: fine-tuning the head only;
- ``optax.adam(...).init`` over every float value of the model: the state an
  optimiser over all variables keeps (before issue 23's ``wrt`` an Optimizer
  over a Module gave statistics Adam moments too, and its int counters
  crashed ``apply_gradients``);
- ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` over the same model in Flax NNX.

Then one jitted training step of each jaxvars optimiser, against a raw
``jax.jit`` + optax step over the trainable values, to show the smaller state
costs nothing per step. Interleaved medians, the same process.

Run: pip install -e ".[bench]" && python benchmarks/optimizer_state.py [--quick]
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import optax
from _timing import interleaved_medians, report

import jaxvars as jv

WIDTH, BLOCKS = 512, 8


class BatchNorm(jv.Module):
    def __init__(self, n):
        super().__init__()
        self.scale = jv.Variable(jnp.ones(n), name="scale")
        self.bias = jv.Variable(jnp.zeros(n), name="bias")
        self.mean = jv.Variable(jnp.zeros(n), name="mean", trainable=False)
        self.var = jv.Variable(jnp.ones(n), name="var", trainable=False)
        self.count = jv.Variable(0, name="count", trainable=False)

    def __call__(self, x):
        mean, var = x.mean(0), x.var(0)
        self.mean.assign(0.9 * self.mean + 0.1 * mean)
        self.var.assign(0.9 * self.var + 0.1 * var)
        self.count.assign_add(1)
        return (x - mean) / jnp.sqrt(var + 1e-5) * self.scale + self.bias


class Dense(jv.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.w = jv.Variable(jv.random.normal((n_in, n_out)) / n_in**0.5, name="w")

    def __call__(self, x):
        return x @ self.w


class Net(jv.Module):
    def __init__(self):
        super().__init__()
        self.blocks = [[Dense(WIDTH, WIDTH), BatchNorm(WIDTH)] for _ in range(BLOCKS)]
        self.head = Dense(WIDTH, 10)

    def __call__(self, x):
        for dense, norm in self.blocks:
            x = jax.nn.relu(norm(dense(x)))
        return self.head(x)


def state_bytes(leaves):
    return sum(x.size * x.dtype.itemsize for x in leaves)


def nnx_state_bytes() -> int | None:
    try:
        from flax import nnx
    except ImportError:
        return None

    class NNXNet(nnx.Module):
        def __init__(self, rngs):
            linear = [nnx.Linear(WIDTH, WIDTH, use_bias=False, rngs=rngs) for _ in range(BLOCKS)]
            self.dense = nnx.List(linear)
            self.norm = nnx.List([nnx.BatchNorm(WIDTH, rngs=rngs) for _ in range(BLOCKS)])
            self.head = nnx.Linear(WIDTH, 10, use_bias=False, rngs=rngs)

    optimizer = nnx.Optimizer(NNXNet(nnx.Rngs(0)), optax.adam(1e-3), wrt=nnx.Param)
    return state_bytes(jax.tree.leaves(nnx.state(optimizer.opt_state)))


def main() -> None:
    quick = "--quick" in sys.argv
    model = Net()
    every = [v.value for v in model.variables if jnp.issubdtype(v.dtype, jnp.floating)]
    counts = sum(1 for v in model.variables if not jnp.issubdtype(v.dtype, jnp.floating))
    default = jv.Optimizer(optax.adam(1e-3), model)
    head = jv.Optimizer(optax.adam(1e-3), model, wrt="head/", name="head_optimizer")
    rows = {
        "jv.Optimizer (wrt='trainable')": state_bytes(v.value for v in default._state),
        "jv.Optimizer (wrt='head/')": state_bytes(v.value for v in head._state),
        "optax.adam over every float value": state_bytes(
            jax.tree.leaves(optax.adam(1e-3).init(every))
        ),
    }
    trainable = [v.value for v in model.variables if v.trainable is True]
    statistics = rows["optax.adam over every float value"] - state_bytes(
        jax.tree.leaves(optax.adam(1e-3).init(trainable))
    )
    nnx_bytes = nnx_state_bytes()
    if nnx_bytes is not None:
        rows["nnx.Optimizer (wrt=nnx.Param)"] = nnx_bytes
    params = state_bytes(v.value for v in model.variables)
    print(f"Model: {params / 2**20:.2f} MiB of values, {counts} int32 counters.")
    print(
        f"Adam moments an optimiser over every float value gives the BatchNorm statistics: "
        f"{statistics / 2**10:.0f} KiB; jv.Optimizer and nnx.Optimizer give them none."
    )
    print("Adam state:")
    for name, nbytes in rows.items():
        print(f"  {name:38s} {nbytes / 2**20:7.2f} MiB  ({nbytes / params:.2f}x the model)")

    x = jax.random.normal(jax.random.PRNGKey(0), (64, WIDTH))
    y = jnp.zeros((64, 10))

    def loss():
        return jnp.mean((model(x) - y) ** 2)

    def jv_step(opt):
        @jv.jit
        def step():
            value, grads = jv.value_and_grad(loss, model)()
            opt.apply_gradients(grads)
            return value

        return lambda: step().block_until_ready()

    # The raw step: the pure form's trainable values differentiated, the
    # statistics it assigns carried, optax over the trainable values only.
    pure, state = jv.functional(model, x)
    state = jax.tree.map(jnp.copy, state)  # donated below: not the variables' own arrays
    trains = [p for p, v in model.named_variables().items() if v.trainable is True]
    tx = optax.adam(1e-3)
    carried = [state, tx.init({k: state[k] for k in trains})]

    @functools.partial(jax.jit, donate_argnums=(0, 1))  # as jv.jit donates the old values
    def raw(values, opt_state):
        def f(params):
            out, new = pure({**values, **params}, x)
            return jnp.mean((out - y) ** 2), new

        params = {k: values[k] for k in trains}
        (value, new), grads = jax.value_and_grad(f, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return value, {**new, **optax.apply_updates(params, updates)}, opt_state

    def raw_step():
        value, carried[0], carried[1] = raw(*carried)
        value.block_until_ready()

    medians = interleaved_medians(
        {
            "raw jax.jit + optax": raw_step,
            "jv step (wrt='trainable')": jv_step(default),
            "jv step (wrt='head/')": jv_step(head),
        },
        rounds=5 if quick else 25,
        calls=3 if quick else 20,
    )
    report("One training step, batch 64:", medians, baseline="raw jax.jit + optax")


if __name__ == "__main__":
    main()
