"""Eager cost of the Variable cell against the raw JAX operation it wraps.

Run: python benchmarks/eager.py [--quick]
Target: each jaxvars operation at most 1.3x the raw one.
"""

from __future__ import annotations

import sys

import jax.numpy as jnp
from _timing import interleaved_medians, report

import jaxvars as jv


def main(quick: bool = False) -> None:
    rounds, calls = (3, 20) if quick else (40, 300)
    x = jnp.ones(1000, jnp.float32)
    d = jnp.full(1000, 1e-6, jnp.float32)
    v = jv.Variable(x)
    state = {"raw": x}

    def raw_update():
        state["raw"] = state["raw"] + d
        state["raw"].block_until_ready()

    def cell_update():
        v.assign_add(d).value.block_until_ready()

    def raw_read():
        (x + d).block_until_ready()

    def cell_read():
        (v + d).block_until_ready()

    updates = interleaved_medians(
        {"raw x = x + d": raw_update, "v.assign_add(d)": cell_update}, rounds=rounds, calls=calls
    )
    report("update of a (1000,) float32 array", updates, "raw x = x + d")
    reads = interleaved_medians(
        {"raw a + x": raw_read, "v + x": cell_read}, rounds=rounds, calls=calls
    )
    report("expression on a (1000,) float32 array", reads, "raw a + x")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
