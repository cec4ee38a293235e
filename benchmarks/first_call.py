"""First call of a jitted training step: trace + compile + first run, in a fresh process.

What a notebook user waits for at every new cell, retrace or changed shape.
An MLP step (MSE, adam) at 6, 60, 600 and 2,000 variables, and a 64-layer
residual model scanned over its stacked layers: raw functional jax.jit +
optax (the same step written by hand, undonated), jaxvars (jv.jit,
jv.value_and_grad, jv.Optimizer; jv.scan for the deep model) and Flax NNX
(nnx.jit, nnx.Optimizer; jax.lax.scan over stacked params). Each sample is a
fresh Python process (no warm caches), samples are interleaved across
contenders, and the medians are compared. jv.jit donates what a step assigns;
raw jax.jit and nnx.jit with donation are measured too, since donation makes
XLA's compile slower (9-15% of it here).

Run: pip install -e ".[bench]" && python benchmarks/first_call.py [--quick] [--samples N]
(--quick: 6 and 60 variables and the scanned model, 3 samples.)
Target: jaxvars <= 1.05x raw at every size, and ahead of nnx.jit.
"""

from __future__ import annotations

import functools
import json
import sys
import time

from _timing import fresh_process_medians

WIDTH, BATCH, SCAN_DEPTH = 32, 16, 64


def _data():
    import jax.numpy as jnp

    x = jnp.linspace(-1.0, 1.0, BATCH * WIDTH).reshape(BATCH, WIDTH)
    return x, jnp.sin(x)


def _params(layers):
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.PRNGKey(0), layers)
    return [(jax.random.normal(k, (WIDTH, WIDTH)) / WIDTH**0.5, jnp.zeros(WIDTH)) for k in keys]


def _forward(params, x):
    import jax.numpy as jnp

    for w, b in params:
        x = jnp.tanh(x @ w + b)
    return x


def _scanned_forward(w, b, x):
    import jax
    import jax.numpy as jnp

    def layer(h, wb):
        return h + jnp.tanh(h @ wb[0] + wb[1]), None

    return jax.lax.scan(layer, x, (w, b))[0]


def raw(layers, scanned, donate=False):
    import jax
    import jax.numpy as jnp
    import optax

    x, y = _data()
    tx = optax.adam(1e-3)
    if scanned:
        params = [jnp.stack([w for w, _ in _params(SCAN_DEPTH)]), jnp.zeros((SCAN_DEPTH, WIDTH))]
        forward = lambda p, x: _scanned_forward(p[0], p[1], x)  # noqa: E731
    else:
        params, forward = _params(layers), _forward
    opt_state = tx.init(params)

    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((forward(p, x) - y) ** 2))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(train_step, donate_argnums=(0, 1) if donate else ())
    return lambda: step(params, opt_state, x, y)


def jaxvars(layers, scanned, donate=True):
    import jax.numpy as jnp
    import optax

    import jaxvars as jv

    x, y = _data()

    class Dense(jv.Module):
        def __init__(self, w, b):
            super().__init__()
            self.w, self.b = jv.Variable(w, name="w"), jv.Variable(b, name="b")

        def __call__(self, x):
            return jnp.tanh(x @ self.w + self.b)

    class MLP(jv.Module):
        def __init__(self):
            super().__init__()
            self.layers = [Dense(w, b) for w, b in _params(layers)]

        def __call__(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    class Deep(jv.Module):
        def __init__(self):
            super().__init__()
            w = jnp.stack([w for w, _ in _params(SCAN_DEPTH)])
            self.w = jv.Variable(w, name="w")
            self.b = jv.Variable(jnp.zeros((SCAN_DEPTH, WIDTH)), name="b")

        def __call__(self, x):
            step = lambda h, _: (h + jnp.tanh(h @ self.w + self.b), None)  # noqa: E731
            return jv.scan(step, x, length=SCAN_DEPTH, variable_axes={self: 0})[0]

    model = Deep() if scanned else MLP()
    opt = jv.Optimizer(optax.adam(1e-3), model)

    def step(model, x, y):
        loss, grads = jv.value_and_grad(lambda: jnp.mean((model(x) - y) ** 2), model)()
        opt.apply_gradients(grads)
        return loss

    step = jv.jit(step, donate=donate)

    return lambda: step(model, x, y)


def nnx(layers, scanned, donate=False):
    import jax.numpy as jnp
    import optax
    from flax import nnx

    x, y = _data()

    class MLP(nnx.Module):
        def __init__(self):
            params = _params(layers)
            self.layers = nnx.List([nnx.Dict(w=nnx.Param(w), b=nnx.Param(b)) for w, b in params])

        def __call__(self, x):
            return _forward([(layer["w"][...], layer["b"][...]) for layer in self.layers], x)

    class Deep(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.stack([w for w, _ in _params(SCAN_DEPTH)]))
            self.b = nnx.Param(jnp.zeros((SCAN_DEPTH, WIDTH)))

        def __call__(self, x):
            return _scanned_forward(self.w[...], self.b[...], x)

    model = Deep() if scanned else MLP()
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    def train_step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    step = nnx.jit(train_step, donate_argnums=(0, 1) if donate else ())
    return lambda: step(model, optimizer, x, y)


CONTENDERS = {
    "raw jax.jit": raw,
    "jv.jit": jaxvars,
    "nnx.jit": nnx,
    # jv.jit donates the old buffers of what a step assigns (one set of
    # parameters in memory, not two); XLA takes longer to compile a donating
    # step, so the same two with donation show what that costs.
    "raw, donated": functools.partial(raw, donate=True),
    "nnx, donated": functools.partial(nnx, donate=True),
    "jv, donate=False": functools.partial(jaxvars, donate=False),
}


def sample(contender: str, layers: int, scanned: bool) -> float:
    """Seconds of the first call, in this (fresh) process."""
    import jax

    first = CONTENDERS[contender](layers, scanned)
    start = time.perf_counter()
    jax.block_until_ready(first())
    return time.perf_counter() - start


def main() -> None:
    if sys.argv[1:2] == ["--sample"]:
        contender, layers, scanned = sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
        print(json.dumps(sample(contender, layers, scanned)))
        return
    quick = "--quick" in sys.argv
    samples = int(sys.argv[sys.argv.index("--samples") + 1]) if "--samples" in sys.argv else 5
    samples = 3 if quick and "--samples" not in sys.argv else samples
    cases = [(f"{2 * n} variables", n, False) for n in ((3, 30) if quick else (3, 30, 300, 1000))]
    cases.append((f"{SCAN_DEPTH} layers, jv.scan (4 variables)", SCAN_DEPTH, True))
    print(f"first call (trace + compile + run), median of {samples} fresh processes")
    for title, layers, scanned in cases:
        case = [str(layers), str(int(scanned))]
        medians = fresh_process_medians(__file__, list(CONTENDERS), case, samples)
        raw_s, nnx_s = medians["raw jax.jit"], medians["nnx.jit"]
        donated_s = medians["raw, donated"]
        print(f"\n{title}")
        for name, s in medians.items():
            ratios = f"{s / raw_s:6.3f}x raw   {s / nnx_s:6.3f}x nnx"
            ratios += f"   {s / donated_s:6.3f}x raw donated"
            print(f"  {name:<12} {s:8.3f} s   {ratios}")


if __name__ == "__main__":
    main()
