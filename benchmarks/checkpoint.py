"""Checkpoint throughput: jv.save / jv.restore of a 1 GB model against np.save / np.load.

The same arrays, in the same run: 64 float32 matrices of 2048 x 2048 (1 GiB).
jv.save writes one file atomically (a temporary file swapped with the old
one) with checksums, without fsync like np.save (durable=True adds it);
jv.restore checks the whole file first, then puts each array on its
variable's devices. np.save overwrites 64 plain .npy files and np.load reads
them back to host memory only; like a restore into a live model, the arrays
it read last time are let go only once the new ones are read. Throughput
ratios above 1 mean jaxvars is faster.

Write-back is controlled: before each timed step the benchmark waits for
jv.save's background freeing of the previous file and runs `sync`, so every
step on either side starts with nothing left to write or free (without this,
whichever side runs while the kernel flushes the other's gigabyte is slowed,
and ratios swing 0.3-1.0x). Both sides overwrite a checkpoint already on
disk, as a training loop does. The time the background free took is printed.

Memory is controlled too. The development machines are VMs that hand idle
memory back to their host, and memory first touched after that costs about
10x more (measured: 2.7 s against 0.27 s for 2 GiB). Whichever side happens
to run just after the other freed a gigabyte got warm memory and won by up
to 4x. So before each timed step the benchmark touches and frees as much
memory as the step writes or reads: both sides start with the same warm
memory. On machines without such a balloon, this changes nothing. With
--cold, the benchmark instead waits 5 s before each step, so that the VM has
taken back all free memory, as in a training loop that saves every few
minutes: np.save then reuses the pages of the files it truncates, jv.save
those of the previous checkpoint (see jaxvars/_atomic_file.py), and both
loads get cold memory.

Run: python benchmarks/checkpoint.py [--quick] [--cold]
Target: at least 0.8x for both.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

import jaxvars as jv


def settle(nbytes: int, cold: bool) -> float:
    """Wait for jv.save's background frees and flush everything; then warm ``nbytes``
    of free memory, or with ``cold`` let the VM take its idle memory back (see the
    module docstring). Returns the wait for the frees."""
    start = time.perf_counter()
    for thread in threading.enumerate():
        if thread.name == "jaxvars-free":
            thread.join()
    waited = time.perf_counter() - start
    os.sync()
    if cold:
        time.sleep(5)  # the balloon reports freed memory within a few seconds
    else:
        np.ones(nbytes, np.uint8)  # touched, then freed at once
    return waited


def main(quick: bool = False, cold: bool = False) -> None:
    count = 8 if quick else 64
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((2048, 2048), np.float32) for _ in range(count)]
    variables = {f"layer{i}": jv.Variable(a) for i, a in enumerate(arrays)}
    nbytes = sum(a.nbytes for a in arrays)
    gib = nbytes / 2**30

    def timed(fn) -> float:
        settle(nbytes, cold)
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.safetensors")
        npy = [os.path.join(directory, f"{i}.npy") for i in range(count)]
        times: dict[str, list[float]] = {"save": [], "np.save": [], "restore": [], "np.load": []}
        freeing = []

        def write_npy() -> None:
            for file, array in zip(npy, arrays, strict=True):
                np.save(file, array)

        loaded = [arrays]

        def read_npy() -> None:  # like restore, holds the old arrays until the new are read
            loaded[0] = [np.load(file) for file in npy]

        write_npy()  # both sides overwrite files already there
        jv.save(path, variables)
        for _ in range(2 if quick else 5):  # interleaved repeats, median kept
            times["np.save"].append(timed(write_npy))
            times["save"].append(timed(lambda: jv.save(path, variables)))
            freeing.append(settle(0, cold=False))
            times["np.load"].append(timed(read_npy))
            times["restore"].append(timed(lambda: jv.restore(path, variables)))
    median = {k: statistics.median(v) for k, v in times.items()}
    memory = "cold" if cold else "warmed"
    print(f"\nCheckpoint of {count} float32 2048x2048 arrays ({gib:.2f} GiB), {memory} memory")
    for ours, theirs in (("save", "np.save"), ("restore", "np.load")):
        print(
            f"  jv.{ours:<8} {gib / median[ours]:6.2f} GiB/s   {theirs:<8} "
            f"{gib / median[theirs]:6.2f} GiB/s   ratio {median[theirs] / median[ours]:5.2f}x"
        )
    print(
        f"  (after jv.save returned, freeing the previous file took a further "
        f"{statistics.median(freeing):.2f} s on a background thread)"
    )


if __name__ == "__main__":
    main(quick="--quick" in sys.argv, cold="--cold" in sys.argv)
