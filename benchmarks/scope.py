"""Cost of get_variable: creating 10,000 variables in nested scopes, then reusing them.

Run: python benchmarks/scope.py [--quick]
Target: under 50 microseconds per reuse lookup.
"""

from __future__ import annotations

import statistics
import sys
import time

import jax

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


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
