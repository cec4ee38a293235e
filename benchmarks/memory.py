"""Peak memory of SGD training steps on a 420 MB model: jaxvars vs raw JAX with donation.

Each style runs in its own process (peak RSS is per process): 25 dense layers
of 2048 x 2048 float32 (105M parameters, 420 MB), batch 8, three SGD steps.
Prints the peak resident memory of each, above and including the memory the
process had after importing JAX, and the ratio to raw.

Run: python benchmarks/memory.py
Target: jaxvars at most 1.05x raw-with-donation.
"""

from __future__ import annotations

import functools
import resource
import subprocess
import sys

LAYERS, WIDTH, BATCH, STEPS, LR = 25, 2048, 8, 3, 1e-3


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_raw() -> None:
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.PRNGKey(0), LAYERS)
    params = [jax.random.normal(k, (WIDTH, WIDTH)) / WIDTH**0.5 for k in keys]

    def loss(params, x):
        for w in params:
            x = jnp.tanh(x @ w)
        return jnp.mean(x**2)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(params, x):
        grads = jax.grad(loss)(params, x)
        return [p - LR * g for p, g in zip(params, grads, strict=True)]

    x = jnp.ones((BATCH, WIDTH))
    for _ in range(STEPS):
        params = step(params, x)
    jax.block_until_ready(params)


def run_jaxvars() -> None:
    import jax
    import jax.numpy as jnp
    import optax

    import jaxvars as jv

    class Deep(jv.Module):
        def __init__(self):
            super().__init__()
            keys = jax.random.split(jax.random.PRNGKey(0), LAYERS)
            self.layers = [
                jv.Variable(lambda k=k: jax.random.normal(k, (WIDTH, WIDTH)) / WIDTH**0.5)
                for k in keys
            ]

        def __call__(self, x):
            for w in self.layers:
                x = jnp.tanh(x @ w)
            return x

    model = Deep()
    opt = jv.Optimizer(optax.sgd(LR), model)

    @jv.jit
    def step(model, x):
        opt.apply_gradients(jv.grad(lambda: jnp.mean(model(x) ** 2), model)())

    x = jnp.ones((BATCH, WIDTH))
    for _ in range(STEPS):
        step(model, x)
    jax.block_until_ready(model.layers[0].value)


def child(style: str) -> None:
    # The same imports in both styles, so the baseline is the same runtime.
    import jax  # noqa: F401
    import optax  # noqa: F401

    import jaxvars  # noqa: F401

    baseline = peak_mb()
    {"raw": run_raw, "jaxvars": run_jaxvars}[style]()
    print(f"{baseline:.1f} {peak_mb():.1f}")


def main() -> None:
    results = {}
    for style in ("raw", "jaxvars"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", style], capture_output=True, text=True, check=True
        ).stdout.split()
        results[style] = (float(out[-2]), float(out[-1]))
    params_mb = LAYERS * WIDTH * WIDTH * 4 / 2**20
    print(f"\nPeak RSS of {STEPS} SGD steps on {LAYERS} x {WIDTH}^2 float32 ({params_mb:.0f} MiB)")
    raw_base, raw_peak = results["raw"]
    for style, (base, peak) in results.items():
        print(
            f"  {style:<26} peak {peak:8.1f} MiB ({peak / raw_peak:5.3f}x raw)   "
            f"above import {peak - base:8.1f} MiB ({(peak - base) / (raw_peak - raw_base):5.3f}x)"
        )


if __name__ == "__main__":
    if "--child" in sys.argv:
        child(sys.argv[-1])
    else:
        main()
