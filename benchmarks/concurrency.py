"""Several threads sharing one jitted training step: total steps/s against one thread.

Each call of a jv.jit function is one atomic step (the state lock guards the
gather, the dispatch and the write-back), so threads sharing a step never lose
an update. This measures what that costs: the same number of steps run by 1
thread and by 4 threads, alternately, medians of several rounds. The step is
the SMALL and LARGE models of step_overhead.py (MLP, MSE, adam).

Run: python benchmarks/concurrency.py [--quick]
"""

from __future__ import annotations

import statistics
import sys
import threading
import time

import jax
import jax.numpy as jnp
from step_overhead import SIZES, jaxvars_contender


def steps_per_second(run, threads: int, steps: int) -> float:
    per_thread = max(1, steps // threads)

    def worker():
        for _ in range(per_thread):
            run()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return per_thread * threads / (time.perf_counter() - start)


def main(quick: bool = False) -> None:
    rounds = 3 if quick else 7
    # Steps per round: about a second of work each on 2 CPU cores.
    steps_of = {"SMALL": 200 if quick else 4000, "LARGE": 8 if quick else 80}
    for title, (sizes, batch) in list(SIZES.items())[:2]:
        steps = steps_of[title.split()[0]]
        x = jax.random.normal(jax.random.PRNGKey(1), (batch, sizes[0]))
        y = jnp.zeros((batch, sizes[-1]))
        run, _ = jaxvars_contender(sizes, x, y)
        run()
        results: dict[int, list[float]] = {1: [], 4: []}
        for _ in range(rounds):
            for threads in results:
                results[threads].append(steps_per_second(run, threads, steps))
        one, four = (statistics.median(results[n]) for n in (1, 4))
        print(f"\n{title}: one jv.jit step shared by threads")
        print(f"  1 thread                       {one:9.0f} steps/s   1.000x")
        print(f"  4 threads                      {four:9.0f} steps/s   {four / one:.3f}x")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
