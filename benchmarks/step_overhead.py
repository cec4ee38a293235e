"""Per-step cost of a jitted MLP training step (MSE, adam) in four styles.

jaxvars (jv.jit + jv.value_and_grad + jv.Optimizer), raw functional jax.jit +
optax (params and optimiser state donated), Flax NNX (nnx.jit, and its cached
path nnx.cached_partial) and Equinox (eqx.filter_jit), interleaved round-robin
in one process. Prints median microseconds per step and the ratio to raw.

Run: pip install -e ".[bench]" && python benchmarks/step_overhead.py [--quick] [--pair]
(--pair: only raw and jaxvars, alternating; the peers change the SMALL ratio.)
Targets: SMALL <= 1.10x raw, LARGE <= 1.02x, 100 layers <= 1.15x, and
jv.fori_loop <= 1.05x a raw jax.lax.fori_loop per step.
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import optax
from _timing import interleaved_medians, report

import jaxvars as jv

SIZES = {
    "SMALL 32-64-64-1, batch 32": ([32, 64, 64, 1], 32),
    "LARGE 4 x 1024, batch 256": ([1024] * 5, 256),
    "100 layers of width 64, batch 32": ([32] + [64] * 99 + [1], 32),
}


def mse(prediction, target):
    return jnp.mean((prediction - target) ** 2)


def init_params(sizes):
    keys = jax.random.split(jax.random.PRNGKey(0), len(sizes) - 1)
    return [
        (jax.random.normal(k, (m, n)) / jnp.sqrt(m), jnp.zeros(n))
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def forward(params, x):
    for i, (w, b) in enumerate(params):
        x = x @ w + b
        if i < len(params) - 1:
            x = jax.nn.relu(x)
    return x


# -- raw functional JAX ------------------------------------------------------------------


def raw_contender(sizes, x, y):
    tx = optax.adam(1e-3)
    state = {"params": init_params(sizes)}
    state["opt"] = tx.init(state["params"])

    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(lambda p: mse(forward(p, x), y))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(train_step, donate_argnums=(0, 1))

    def run():
        state["params"], state["opt"], loss = step(state["params"], state["opt"], x, y)
        loss.block_until_ready()

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def hundred(params, opt_state, x, y):
        def body(i, carry):
            params, opt_state, _ = train_step(*carry, x, y)
            return params, opt_state

        return jax.lax.fori_loop(0, 100, body, (params, opt_state))

    def run_hundred():
        state["params"], state["opt"] = hundred(state["params"], state["opt"], x, y)
        jax.block_until_ready(state["params"])

    return run, run_hundred


# -- jaxvars --------------------------------------------------------------------------------


class Dense(jv.Module):
    def __init__(self, w, b):
        super().__init__()
        self.w = jv.Variable(w, name="w")
        self.b = jv.Variable(b, name="b")

    def __call__(self, x):
        return x @ self.w + self.b


class MLP(jv.Module):
    def __init__(self, sizes):
        super().__init__()
        self.layers = [Dense(w, b) for w, b in init_params(sizes)]

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = jax.nn.relu(x)
        return x


def jaxvars_contender(sizes, x, y):
    model = MLP(sizes)
    opt = jv.Optimizer(optax.adam(1e-3), model)

    def train_step(model, x, y):
        loss, grads = jv.value_and_grad(lambda: mse(model(x), y), model)()
        opt.apply_gradients(grads)
        return loss

    step = jv.jit(train_step)

    def run():
        step(model, x, y).block_until_ready()

    @jv.jit
    def hundred(model, x, y):
        def body(i, carry):
            train_step(model, x, y)
            return carry

        jv.fori_loop(0, 100, body)

    def run_hundred():
        hundred(model, x, y)
        jax.block_until_ready(model.layers[0].w.value)

    return run, run_hundred


# -- Flax NNX and Equinox ---------------------------------------------------------------------


def nnx_contenders(sizes, x, y):
    from flax import nnx

    class NNXMLP(nnx.Module):
        def __init__(self, params):
            self.layers = nnx.List([nnx.Dict(w=nnx.Param(w), b=nnx.Param(b)) for w, b in params])

        def __call__(self, x):
            return forward([(layer["w"][...], layer["b"][...]) for layer in self.layers], x)

    model = NNXMLP(init_params(sizes))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    def train_step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: mse(m(x), y))(model)
        optimizer.update(model, grads)
        return loss

    step = nnx.jit(train_step, donate_argnums=(0, 1))
    cached = nnx.cached_partial(step, model, optimizer)

    def run():
        step(model, optimizer, x, y).block_until_ready()

    def run_cached():
        cached(x, y).block_until_ready()

    return run, run_cached


def equinox_contender(sizes, x, y):
    import equinox as eqx

    class EqxMLP(eqx.Module):
        params: list

        def __call__(self, x):
            return forward(self.params, x)

    tx = optax.adam(1e-3)
    state = {"model": EqxMLP(init_params(sizes))}
    state["opt"] = tx.init(eqx.filter(state["model"], eqx.is_array))

    @eqx.filter_jit(donate="all")
    def step(model, opt_state, x, y):
        loss, grads = eqx.filter_value_and_grad(lambda m: mse(m(x), y))(model)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    def run():
        state["model"], state["opt"], loss = step(state["model"], state["opt"], x, y)
        loss.block_until_ready()

    return run


def main(quick: bool = False, pair: bool = False) -> None:
    rounds, calls = (3, 5) if quick else (25, 40)
    for title, (sizes, batch) in SIZES.items():
        if pair and not title.startswith("SMALL"):
            continue
        x = jax.random.normal(jax.random.PRNGKey(1), (batch, sizes[0]))
        y = jax.random.normal(jax.random.PRNGKey(2), (batch, sizes[-1]))
        raw, raw_hundred = raw_contender(sizes, x, y)
        ours, our_hundred = jaxvars_contender(sizes, x, y)
        contenders = {"raw jax.jit + optax (donated)": raw, "jaxvars jv.jit": ours}
        if pair:
            report(
                f"{title}: raw and jaxvars alone",
                interleaved_medians(contenders, rounds=rounds, calls=calls),
                "raw jax.jit + optax (donated)",
            )
            continue
        try:
            nnx_run, nnx_cached = nnx_contenders(sizes, x, y)
            contenders["flax nnx.jit"] = nnx_run
            contenders["flax nnx.cached_partial"] = nnx_cached
            contenders["equinox filter_jit"] = equinox_contender(sizes, x, y)
        except ImportError:
            print("(flax or equinox missing: pip install -e '.[bench]' to compare)")
        if title.startswith("LARGE"):
            rounds_here, calls_here = max(3, rounds // 3), max(3, calls // 4)
        else:
            rounds_here, calls_here = rounds, calls
        medians = interleaved_medians(contenders, rounds=rounds_here, calls=calls_here)
        report(f"{title}: one jitted call per step", medians, "raw jax.jit + optax (donated)")
        if title.startswith("SMALL"):
            loops = interleaved_medians(
                {"raw lax.fori_loop x100": raw_hundred, "jv.fori_loop x100": our_hundred},
                rounds=rounds,
                calls=max(2, calls // 8),
            )
            per_step = {name: us / 100 for name, us in loops.items()}
            report(
                f"{title}: 100 steps per jitted call (per step)", per_step, "raw lax.fori_loop x100"
            )
            saving = medians["jaxvars jv.jit"] / per_step["jv.fori_loop x100"]
            print(f"  jv.fori_loop saves {saving:.1f}x per step over one jv.jit call per step")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv, pair="--pair" in sys.argv)
