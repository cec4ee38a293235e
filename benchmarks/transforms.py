"""Lifted transforms per call: jaxvars against the same pure function in raw JAX, and NNX.

Each case is one jitted call of a small stateful computation: a counter or a
running statistic assigned inside ``cond`` / ``switch`` / ``while_loop`` /
``scan`` / ``vmap`` / ``remat``. The raw version is a pure function whose
state goes in and comes out (``jax.jit`` with donation); the NNX version uses
``nnx.jit`` with the NNX transform of the same name. Interleaved medians.

Then each case's first call (trace + compile + run; a fresh process per
sample, interleaved, medians), and a 64-layer residual MLP: compile time and step
time of ``jv.scan`` over
stacked layers against the unrolled Python loop, forward and gradient (raw
``jax.lax.scan`` for reference: it bounds what scanning can save).

Run: pip install -e ".[bench]" && python benchmarks/transforms.py [--quick]
Targets: each lifted transform's step <= 1.03x raw; the 64-layer model compiles
>= 5x faster scanned than unrolled.
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
from _timing import fresh_process_medians, interleaved_medians, report

import jaxvars as jv

N = 256  # the state: a (N, N) matrix, updated by a matmul per step


def cases():
    """{name: {contender: build}}: each build makes its state and jitted step and returns
    the step, a () -> None callable (nothing is traced or compiled before its first call)."""
    w0 = jax.random.normal(jax.random.PRNGKey(0), (N, N)) / N
    x0 = jax.random.normal(jax.random.PRNGKey(1), (N, N))
    out = {}

    def update(s):
        return jnp.tanh(s @ w0)

    # -- jaxvars: state in a Variable ------------------------------------------------------
    def jv_case(body):
        state = jv.Variable(jnp.array(x0, copy=True), name="state")
        count = jv.Variable(0, name="count")
        step = jv.jit(lambda: body(state, count))
        return lambda: step().block_until_ready()

    # -- raw: state passed in and out, donated ----------------------------------------------
    def raw_case(body):
        holder = {"s": jnp.array(x0, copy=True), "c": jnp.int32(0)}
        step = jax.jit(body, donate_argnums=(0, 1))

        def run():
            holder["s"], holder["c"], out = step(holder["s"], holder["c"])
            out.block_until_ready()

        return run

    def jv_cond(s, c):
        return jv.cond(c % 2 == 0, lambda: s.assign(update(s)).sum(), lambda: c.assign_add(1) * 0.0)

    def raw_cond(s, c):
        s, c = jax.lax.cond(c % 2 == 0, lambda: (update(s), c), lambda: (s, c + 1))
        return s, c, s.sum()

    def jv_switch(s, c):
        branches = [lambda: s.assign(update(s)).sum(), lambda: c.assign_add(1) * 0.0]
        return jv.switch(c % 2, branches)

    def raw_switch(s, c):
        s, c = jax.lax.switch(c % 2, [lambda: (update(s), c), lambda: (s, c + 1)])
        return s, c, s.sum()

    def jv_while(s, c):
        def body(i):
            s.assign(update(s))
            return i + 1

        return jv.while_loop(lambda i: i < 4, body, 0) * 1.0

    def raw_while(s, c):
        i, s = jax.lax.while_loop(lambda a: a[0] < 4, lambda a: (a[0] + 1, update(a[1])), (0, s))
        return s, c, i * 1.0

    def jv_scan(s, c):
        def body(carry, _):
            s.assign(update(s))
            return carry + 1, None

        return jv.scan(body, 0, length=4)[0] * 1.0

    def raw_scan(s, c):
        (i, s), _ = jax.lax.scan(lambda a, _: ((a[0] + 1, update(a[1])), None), (0, s), length=4)
        return s, c, i * 1.0

    def jv_vmap(s, c):
        def row(r):
            c.assign(jnp.int32(1))  # the same in every lane
            return jnp.tanh(r @ w0)

        s.assign(jv.vmap(row)(s.value))
        return s.sum()

    def raw_vmap(s, c):
        s = jax.vmap(lambda r: jnp.tanh(r @ w0))(s)
        return s, jnp.int32(1), s.sum()

    def jv_remat(s, c):
        return jv.remat(lambda: s.assign(update(s)).sum())()

    def raw_remat(s, c):
        s = jax.checkpoint(update)(s)
        return s, c, s.sum()

    pairs = {
        "cond": (jv_cond, raw_cond),
        "switch": (jv_switch, raw_switch),
        "while_loop": (jv_while, raw_while),
        "scan": (jv_scan, raw_scan),
        "vmap": (jv_vmap, raw_vmap),
        "remat": (jv_remat, raw_remat),
    }
    nnx_steps = nnx_cases(x0, update)
    for name, (ours, raw) in pairs.items():
        out[name] = {
            f"raw lax/jax.{name} (pure)": lambda raw=raw: raw_case(raw),
            f"jv.{name} in jv.jit": lambda ours=ours: jv_case(ours),
        }
        if name in nnx_steps:
            out[name][f"nnx.{name} in nnx.jit"] = nnx_steps[name]
    return out


def nnx_cases(x0, update):
    """NNX's lifted versions, where flax is installed."""
    try:
        from flax import nnx
    except ImportError:
        print("(flax missing: pip install -e '.[bench]' to compare with NNX)")
        return {}

    class State(nnx.Module):
        def __init__(self):
            self.s = nnx.Variable(jnp.array(x0, copy=True))
            self.c = nnx.Variable(jnp.int32(0))

    def cond_step(m):
        def yes(m):
            m.s[...] = update(m.s[...])

        def no(m):
            m.c[...] = m.c[...] + 1

        nnx.cond(m.c[...] % 2 == 0, yes, no, m)
        return m.s[...].sum()

    def scan_step(m):
        # The module rides in the carry, so its updates carry from step to step.
        @nnx.scan(in_axes=(nnx.Carry, None), out_axes=(nnx.Carry, 0), length=4)
        def body(carry, _):
            i, m = carry
            m.s[...] = update(m.s[...])
            return (i + 1, m), i

        (i, _), _ = body((0, m), None)
        return i * 1.0

    def while_step(m):
        def body(a):
            i, m = a
            m.s[...] = update(m.s[...])
            return i + 1, m

        i, _ = nnx.while_loop(lambda a: a[0] < 4, body, (0, m))
        return i * 1.0

    def remat_step(m):
        def f(m):
            m.s[...] = update(m.s[...])
            return m.s[...].sum()

        return nnx.remat(f)(m)

    def nnx_case(fn):
        model, jitted = State(), nnx.jit(fn)
        return lambda: jitted(model).block_until_ready()

    steps = {"cond": cond_step, "scan": scan_step, "while_loop": while_step, "remat": remat_step}
    return {name: lambda fn=fn: nnx_case(fn) for name, fn in steps.items()}


def compile_times(depth: int = 64, width: int = 64) -> None:
    weights = jax.random.normal(jax.random.PRNGKey(2), (depth, width, width)) * 0.02
    w = jv.Variable(weights, name="stacked")
    x = jax.random.normal(jax.random.PRNGKey(3), (32, width))

    def layer(h, wi):
        return h + jnp.tanh(h @ wi)

    def scanned():
        step = lambda h, _: (layer(h, w.value), None)  # noqa: E731
        return jv.scan(step, x, length=depth, variable_axes={w: 0})[0].sum()

    def unrolled():
        h = x
        for i in range(depth):
            h = layer(h, w[i])
        return h.sum()

    def raw_scan(ws):
        return jax.lax.scan(lambda h, wi: (layer(h, wi), None), x, ws)[0].sum()

    jax.jit(lambda a: a + 1)(x).block_until_ready()  # the process's first compile, unmeasured
    for kind in ("forward", "gradient"):
        grad = kind == "gradient"
        contenders = {
            "unrolled (jv.jit)": jv.jit(jv.grad(unrolled, w) if grad else unrolled),
            "jv.scan (jv.jit)": jv.jit(jv.grad(scanned, w) if grad else scanned),
        }
        raw = jax.jit(jax.grad(raw_scan) if grad else raw_scan)
        seconds = {}
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn().block_until_ready()
            seconds[name] = time.perf_counter() - start
        start = time.perf_counter()
        raw(weights).block_until_ready()
        seconds["raw jax.lax.scan, for reference"] = time.perf_counter() - start
        print(f"\n{depth}-layer residual MLP, {kind}: compile time (first call)")
        base = seconds["unrolled (jv.jit)"]
        for name, t in seconds.items():
            print(f"  {name:<36} {t:9.3f} s    {base / t:6.1f}x faster than unrolled")
        steps = {name: (lambda fn=fn: fn().block_until_ready()) for name, fn in contenders.items()}
        report(
            f"{depth}-layer residual MLP, {kind}: per step",
            interleaved_medians(steps, rounds=7, calls=10),
            "unrolled (jv.jit)",
        )


def first_call(name: str, contender: str) -> float:
    """Seconds of one case's first call (trace + compile + run), in this fresh process."""
    step = cases()[name][contender]()
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main(quick: bool = False) -> None:
    if sys.argv[1:2] == ["--sample"]:
        print(json.dumps(first_call(sys.argv[3], sys.argv[2])))
        return
    rounds, calls, samples = (3, 10, 3) if quick else (15, 100, 5)
    first_calls = {}
    for name, builds in cases().items():
        raw = f"raw lax/jax.{name} (pure)"
        report(
            f"{name}: one jitted call",
            interleaved_medians(
                {c: build() for c, build in builds.items()}, rounds=rounds, calls=calls
            ),
            raw,
        )
        first_calls[name] = fresh_process_medians(__file__, list(builds), [name], samples)
    print(f"\nfirst call (trace + compile + run), median of {samples} fresh processes")
    for name, medians in first_calls.items():
        raw_s = medians[f"raw lax/jax.{name} (pure)"]
        nnx_s = medians.get(f"nnx.{name} in nnx.jit")
        print(f"{name}:")
        for contender, seconds in medians.items():
            ratios = f"{seconds / raw_s:6.3f}x raw" + (
                f"   {seconds / nnx_s:6.3f}x nnx" if nnx_s else ""
            )
            print(f"  {contender:<28} {seconds:8.3f} s   {ratios}")
    compile_times()


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
