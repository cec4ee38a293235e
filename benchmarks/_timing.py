"""Shared timing helpers: interleaved medians, so machine noise hits every contender alike."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence


def interleaved_medians(
    contenders: dict[str, Callable[[], object]], *, rounds: int = 30, calls: int = 200
) -> dict[str, float]:
    """Median microseconds per call of each contender, timed round-robin.

    Each round times ``calls`` calls of every contender in turn; the result is
    the median over rounds, which discounts rounds disturbed by other work.
    ``fn()`` must block until its result is ready (call ``block_until_ready``).
    """
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():  # warm up: compile and fill caches
        fn()
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: statistics.median(times) for name, times in samples.items()}


def report(title: str, medians: dict[str, float], baseline: str) -> None:
    """Print medians and their ratio to ``baseline``."""
    print(f"\n{title}")
    base = medians[baseline]
    for name, us in medians.items():
        print(f"  {name:<36} {us:9.2f} us   {us / base:6.3f}x {baseline}")


def fresh_process_medians(
    script: str, contenders: Sequence[str], case: Sequence[str], samples: int
) -> dict[str, float]:
    """Median of what ``script --sample <contender> <*case>`` prints (seconds, as JSON
    on its last line), each sample a fresh process (no warm caches), interleaved."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(samples):
        for name in contenders:
            command = [sys.executable, script, "--sample", name, *case]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            times[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {name: statistics.median(t) for name, t in times.items()}
