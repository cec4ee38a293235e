"""Cost of TF1-style code: get_variable lookups, regularization losses, moving averages.

1. ``get_variable``: creating 10,000 variables in nested scopes, then reusing them.
2. ``jv.regularization_loss()`` over 1,000 regularized variables inside ``jv.jit``:
   per call, against the same sum written by hand over arrays in ``jax.jit``.
3. A training step with ``jv.ExponentialMovingAverage.apply`` inside ``jv.jit``,
   against the same step written with optax (``optax.incremental_update``) in
   ``jax.jit`` with donation.

Run: python benchmarks/scope.py [--quick]
Targets: under 50 microseconds per reuse lookup; the jitted regularization
loss and EMA step within 1.10x of their hand-written equivalents.
"""

from __future__ import annotations

import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax
from _timing import interleaved_medians, report

import jaxvars as jv


def build(store: jv.Store, blocks: int, per_block: int, reuse: object) -> float:
    """Seconds to get or create blocks x per_block variables in two-level scopes."""
    start = time.perf_counter()
    with store:
        for b in range(blocks):
            with jv.variable_scope(f"block{b}", reuse=reuse), jv.variable_scope("dense"):
                for i in range(per_block):
                    jv.get_variable(f"w{i}", (4,), initializer=jax.nn.initializers.zeros)
    return time.perf_counter() - start


def main(quick: bool = False) -> None:
    blocks, per_block = (10, 10) if quick else (100, 100)
    count = blocks * per_block
    store = jv.Store()
    created = build(store, blocks, per_block, None)
    reuses = [build(store, blocks, per_block, True) for _ in range(3 if quick else 7)]
    auto = build(store, blocks, per_block, jv.AUTO_REUSE)
    # The same loop with a plain dict lookup: the floor a registry can reach in Python.
    table = dict.fromkeys(f"block{b}/dense/w{i}" for b in range(blocks) for i in range(per_block))
    start = time.perf_counter()
    for b in range(blocks):
        for i in range(per_block):
            table[f"block{b}/dense/w{i}"]
    floor = time.perf_counter() - start
    reuse = statistics.median(reuses)
    print(f"\nget_variable over {count:,} variables in nested scopes")
    print(f"  create                {created / count * 1e6:8.2f} us per variable")
    print(f"  reuse=True lookup     {reuse / count * 1e6:8.2f} us per variable (target < 50)")
    print(f"  AUTO_REUSE lookup     {auto / count * 1e6:8.2f} us per variable")
    print(f"  plain dict lookup     {floor / count * 1e6:8.2f} us per variable")
    print(f"  reuse / dict lookup   {reuse / floor:8.1f}x")
    regularization(quick)
    moving_average(quick)


def weight_decay(x: jax.Array) -> jax.Array:
    return 1e-4 * jnp.sum(x * x)


def regularization(quick: bool) -> None:
    """jv.regularization_loss() in a jitted loss against the hand-written sum."""
    count = 100 if quick else 1000
    key = jax.random.PRNGKey(0)
    arrays = [jax.random.normal(jax.random.fold_in(key, i), (16,)) for i in range(count)]
    store = jv.Store()
    with store:
        for i, a in enumerate(arrays):
            jv.get_variable(f"w{i}", initializer=a, regularizer=weight_decay)

        @jv.jit
        def jv_loss(x):
            return x + jv.regularization_loss()  # the active store's: this one

        raw_loss = jax.jit(lambda params, x: x + sum(weight_decay(p) for p in params))
        x = jnp.float32(1.0)
        assert abs(float(jv_loss(x)) - float(raw_loss(arrays, x))) < 1e-3
        medians = interleaved_medians(
            {
                "hand-written sum in jax.jit": lambda: raw_loss(arrays, x).block_until_ready(),
                "jv.regularization_loss() in jv.jit": lambda: jv_loss(x).block_until_ready(),
            },
            rounds=10 if quick else 30,
            calls=20 if quick else 100,
        )
    report(
        f"regularization loss over {count:,} variables, per call",
        medians,
        "hand-written sum in jax.jit",
    )


def moving_average(quick: bool) -> None:
    """An SGD step with an EMA of the weights: jaxvars against optax by hand."""
    width, decay, rate = 512, 0.999, 0.01
    key = jax.random.PRNGKey(1)
    w0 = jax.random.normal(key, (width, width)) / width
    x = jax.random.normal(jax.random.fold_in(key, 1), (64, width))

    def loss(w: jax.Array) -> jax.Array:
        return jnp.mean(jnp.tanh(x @ w) ** 2)

    # raw: weights and averages in, out, donated
    @jax.jit
    def raw_step(w, average):
        new = w - rate * jax.grad(loss)(w)
        return new, optax.incremental_update(new, average, step_size=1.0 - decay)

    raw_step = jax.jit(raw_step, donate_argnums=(0, 1))
    state = {"w": jnp.array(w0, copy=True), "avg": jnp.array(w0, copy=True)}

    def run_raw() -> None:
        state["w"], state["avg"] = raw_step(state["w"], state["avg"])
        state["avg"].block_until_ready()

    with jv.Store():
        w = jv.Variable(jnp.array(w0, copy=True), name="w")
        ema = jv.ExponentialMovingAverage(decay)

        @jv.jit
        def jv_step():
            w.assign_sub(rate * jv.grad(lambda: loss(w.value), w)())
            ema.apply([w])

        def run_jv() -> None:
            jv_step()
            ema.average(w).value.block_until_ready()

        medians = interleaved_medians(
            {"optax incremental_update in jax.jit": run_raw, "jv.ExponentialMovingAverage": run_jv},
            rounds=10 if quick else 30,
            calls=20 if quick else 100,
        )
    report(
        f"SGD step + moving average of a {width}x{width} weight, per step",
        medians,
        "optax incremental_update in jax.jit",
    )


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
