"""Checkpoint throughput: jv.save / jv.restore of a 1 GB model against np.save / np.load.

The same arrays, in the same run: 64 float32 matrices of 2048 x 2048 (1 GiB).
jv.save writes one file atomically (a temporary file renamed over the old
one) with checksums, without fsync like np.save (durable=True adds it);
jv.restore checks the whole file first, then puts each array on its
variable's devices. np.save writes 64 plain .npy files and np.load reads them
back to host memory only. Throughput ratios above 1 mean jaxvars is faster.

Run: python benchmarks/checkpoint.py [--quick]
Target: at least 0.8x for both.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import numpy as np

import jaxvars as jv


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(quick: bool = False) -> None:
    count = 8 if quick else 64
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((2048, 2048), np.float32) for _ in range(count)]
    variables = {f"layer{i}": jv.Variable(a) for i, a in enumerate(arrays)}
    gib = sum(a.nbytes for a in arrays) / 2**30
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.safetensors")
        npy = [os.path.join(directory, f"{i}.npy") for i in range(count)]
        times: dict[str, list[float]] = {"save": [], "np.save": [], "restore": [], "np.load": []}
        for _ in range(2 if quick else 3):  # interleaved repeats, median kept
            times["np.save"].append(
                timed(lambda: [np.save(p, a) for p, a in zip(npy, arrays, strict=True)])
            )
            times["save"].append(timed(lambda: jv.save(path, variables)))
            times["np.load"].append(timed(lambda: [np.load(p) for p in npy]))
            times["restore"].append(timed(lambda: jv.restore(path, variables)))
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nCheckpoint of {count} float32 2048x2048 arrays ({gib:.2f} GiB)")
    for ours, theirs in (("save", "np.save"), ("restore", "np.load")):
        print(
            f"  jv.{ours:<8} {gib / median[ours]:6.2f} GiB/s   {theirs:<8} "
            f"{gib / median[theirs]:6.2f} GiB/s   ratio {median[theirs] / median[ours]:5.2f}x"
        )


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
