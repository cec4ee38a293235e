"""Checkpoint throughput: jv.save / jv.restore and jv.CheckpointManager of a 1 GB model
against orbax-checkpoint used directly and np.save / np.load.

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

In the same run: ``jv.CheckpointManager`` (synchronous) saving and
restoring the same variables, against orbax's own CheckpointManager given
the same arrays (what jaxvars adds: keys, checks, assignment); the time an
asynchronous save blocks the caller, against a synchronous save; and, in two
processes on ``jax.distributed`` (4 CPU devices each), the peak resident
memory each process gains while initialising a model sharded over all 8
devices, against the model's full size.

Run: python benchmarks/checkpoint.py [--quick] [--cold]
Targets: jv.save / jv.restore at least 0.8x np.save / np.load; CheckpointManager
within 1.1x of orbax direct; an async save blocks at most 0.3x a synchronous
one; peak memory per process at most 0.6x the model.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
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
    managers(variables, gib, quick)
    init_memory(quick)


def managers(variables: dict[str, jv.Variable], gib: float, quick: bool) -> None:
    """jv.CheckpointManager against orbax's CheckpointManager on the same arrays."""
    import jax
    import orbax.checkpoint as ocp

    arrays = {key: v.value for key, v in variables.items()}
    # The same values in variables committed to the device: what orbax restores
    # into directly. Uncommitted ones are read as host arrays, then put on the
    # default device (one more copy) so that they stay uncommitted.
    device = jax.devices()[0]
    placed = {key: jv.Variable(v, device=device) for key, v in variables.items()}
    abstract = {
        key: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding)
        for key, a in arrays.items()
    }
    times: dict[str, list[float]] = {
        k: []
        for k in (
            "jv save",
            "orbax save",
            "jv restore",
            "jv restore, committed",
            "orbax restore",
            "async blocked",
        )
    }
    with tempfile.TemporaryDirectory() as directory:
        options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False)
        raw = ocp.CheckpointManager(os.path.join(directory, "orbax"), options=options)
        ours = jv.CheckpointManager(os.path.join(directory, "jv"), max_to_keep=1, async_save=False)
        background = jv.CheckpointManager(os.path.join(directory, "async"), max_to_keep=1)
        for step in range(2 if quick else 4):
            for name, fn in (
                (
                    "orbax save",
                    lambda step=step: raw.save(step, args=ocp.args.StandardSave(arrays)),
                ),
                ("jv save", lambda step=step: ours.save(step, variables)),
                (
                    "orbax restore",
                    lambda step=step: raw.restore(step, args=ocp.args.StandardRestore(abstract)),
                ),
                ("jv restore", lambda step=step: ours.restore(variables, step=step)),
                ("jv restore, committed", lambda step=step: ours.restore(placed, step=step)),
                ("async blocked", lambda step=step: background.save(step, variables)),
            ):
                os.sync()
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
                background.wait()
        for manager in (raw, ours, background):
            manager.close()
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nCheckpointManager on the same {gib:.2f} GiB (synchronous unless said)")
    for what in ("save", "restore"):
        jv_time, orbax_time = median[f"jv {what}"], median[f"orbax {what}"]
        print(
            f"  jv.CheckpointManager {what:<8} {jv_time:6.2f} s   orbax direct {orbax_time:6.2f} s"
            f"   {jv_time / orbax_time:5.2f}x orbax (target <= 1.1x)"
        )
    committed = median["jv restore, committed"]
    print(
        f"  jv.CheckpointManager restore, committed variables {committed:6.2f} s"
        f"   {committed / median['orbax restore']:5.2f}x orbax"
    )
    blocked = median["async blocked"] / median["jv save"]
    print(
        f"  async save blocks the caller {median['async blocked']:6.2f} s, "
        f"{blocked:5.2f}x a synchronous save (target <= 0.3x)"
    )


def init_memory(quick: bool) -> None:
    """Peak memory each of 2 processes gains while initialising a sharded model."""
    layers, size = (4, 4096) if quick else (16, 4096)
    full = layers * size * size * 4
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    print(
        f"\nSharded initialisation of a {full / 2**30:.2f} GiB model over 2 processes x 4 devices"
    )
    # glibc raises its mmap threshold after freeing a large block, and then keeps
    # freed temporaries (the random bits of each shard) instead of returning them
    # to the system: measured both ways.
    for malloc, env in (
        ("default malloc", base),
        ("MALLOC_MMAP_THRESHOLD_=1048576", {**base, "MALLOC_MMAP_THRESHOLD_": "1048576"}),
    ):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--init-worker",
                    str(i),
                    str(port),
                    str(layers),
                    str(size),
                ],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        gained = [int(w.communicate(timeout=600)[0].split()[-1]) for w in workers]
        shown = ", ".join(f"{peak / full:4.2f}x" for peak in gained)
        print(f"  {malloc:<32} peak growth per process: {shown} the model (target <= 0.6x)")


def init_worker(process_id: int, port: int, layers: int, size: int) -> None:
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    from jax.sharding import Mesh, PartitionSpec

    mesh = Mesh(np.array(jax.devices()), ("model",))
    init = jax.nn.initializers.normal(0.02)
    with jv.sharding_rules({".*": PartitionSpec("model")}, mesh):  # warm up: compile, runtime
        jv.get_variable("warmup", (8 * 8, 8), initializer=init)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux: restart the peak (VmHWM) from the current size
    before = memory("VmRSS")
    with jv.sharding_rules({".*": PartitionSpec("model")}, mesh):
        model = [
            jv.get_variable(f"layer{i}", (size, size), initializer=init) for i in range(layers)
        ]
    jax.block_until_ready([v.value for v in model])
    assert not model[0].value.is_fully_addressable
    print(memory("VmHWM") - before, flush=True)
    jax.distributed.shutdown()


def memory(field: str) -> int:
    """A size from /proc/self/status in bytes: VmRSS (now) or VmHWM (the peak)."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


if __name__ == "__main__":
    if sys.argv[1:2] == ["--init-worker"]:
        init_worker(*map(int, sys.argv[2:6]))
    else:
        main(quick="--quick" in sys.argv, cold="--cold" in sys.argv)
