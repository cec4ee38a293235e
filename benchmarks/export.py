"""A call of an exported model: jv.load_exported's callable against jax.jit(pure).

The model is an MLP (jv.Module) exported with jv.export; the loaded callable
holds the saved values and runs the deserialized computation. The baseline is
the pure form (jv.functional) under jax.jit, called with its state, as code
written for pure JAX would call it. Interleaved medians, the same process.

Run: pip install -e ".[bench]" && python benchmarks/export.py [--quick]
Target: the loaded callable <= 1.05x jax.jit(pure).
"""

from __future__ import annotations

import sys
import tempfile

import jax
import jax.numpy as jnp
from _timing import interleaved_medians, report

import jaxvars as jv

SIZES = {"SMALL 32-64-64-1, batch 32": [32, 64, 64, 1], "8 layers of width 256": [256] * 9}


class MLP(jv.Module):
    def __init__(self, sizes):
        super().__init__()
        pairs = zip(sizes[:-1], sizes[1:], strict=True)
        self.w = [jv.Variable(jv.random.normal((m, n)) / m**0.5, name="w") for m, n in pairs]
        self.b = [jv.Variable(jnp.zeros(n), name="b") for n in sizes[1:]]

    def __call__(self, x):
        for w, b in zip(self.w, self.b, strict=True):
            x = jnp.tanh(x @ w + b)
        return x


def main() -> None:
    quick = "--quick" in sys.argv
    for title, sizes in SIZES.items():
        medians = interleaved_medians(_contenders(sizes), rounds=10 if quick else 30)
        report(f"{title}: one call", medians, "jax.jit(pure)(state, x)")


def _contenders(sizes):
    model = MLP(sizes)
    x = jnp.ones((32, sizes[0]))
    pure, state = jv.functional(model, x)
    jitted = jax.jit(pure)
    directory = tempfile.mkdtemp()
    jv.export(directory, model, x, batch_axes=0)
    loaded = jv.load_exported(directory)
    return {
        "jax.jit(pure)(state, x)": lambda: jitted(state, x)[0].block_until_ready(),
        "jv.load_exported(...)(x)": lambda: loaded(x).block_until_ready(),
    }


if __name__ == "__main__":
    main()
