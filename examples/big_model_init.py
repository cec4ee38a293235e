"""Initialise a model larger than the memory each process is given, then restore it elsewhere.

Two processes on this machine (jax.distributed on localhost, gloo
collectives), 4 CPU devices each: one 8-device mesh. While it initialises,
each process caps its own memory (address space, ``resource.setrlimit``) at
3/4 of the model's size plus a little room for the runtime, so a full copy
of the model cannot exist in either of them:

1. A full copy of the model (a host array of its size) does not fit in
   either process, as it must not.
2. Created with ``jv.sharding_rules``, each weight's initializer runs as one
   compiled computation whose output is sharded: each device computes only
   its shard, and each process holds half the model. The values equal a
   single-device initialisation with the same seed.
3. ``jv.CheckpointManager`` saves it (each process writes its own shards) and
   restores it into abstract variables laid out on another mesh
   (``jv.eval_shape``), reading only the shards each process needs.

Run: python examples/big_model_init.py
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported inside the functions, once the environment is set
    import jaxvars as jv

LAYERS = 16
ROWS, COLS = (2048, 2048) if os.environ.get("JAXVARS_QUICK") else (4096, 4096)
MODEL_BYTES = LAYERS * ROWS * COLS * 4
ROOM = 32 * 2**20  # for the runtime's own allocations while the cap holds


def memory(field: str) -> int:
    """VmSize (address space) or VmHWM (peak resident memory) in bytes."""
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field + ":")).split()[1]) * 1024


def worker(process_id: int, port: int, directory: str) -> None:
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import jaxvars as jv

    say = print if process_id == 0 else (lambda *a: None)

    mesh = Mesh(np.array(jax.devices()), ("model",))
    init = jax.nn.initializers.normal(0.02)

    def build(spec: PartitionSpec) -> list[jv.Variable]:
        with jv.sharding_rules({".*": spec}, mesh), jv.variable_scope("model"):
            return [jv.get_variable(f"w{i}", (ROWS, COLS), initializer=init) for i in range(LAYERS)]

    # Warm up (compile, start the checkpoint threads) before the cap is set.
    with jv.Store():
        tiny = jv.get_variable("tiny", (8, 8), initializer=init)
        with jv.CheckpointManager(os.path.join(directory, "warmup")) as mgr:
            mgr.save(0, [tiny])
            mgr.restore([tiny])
    cap = memory("VmSize") + int(0.75 * MODEL_BYTES) + ROOM
    unlimited = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (cap, unlimited[1]))
    say(f"model: {LAYERS} x {ROWS}x{COLS} float32 = {MODEL_BYTES / 2**20:.0f} MiB")
    say(f"each process may grow by {0.75 * MODEL_BYTES / 2**20:.0f} MiB (+ some room)")

    try:
        np.ones(MODEL_BYTES, np.uint8)  # what each process would hold without sharding
        say("a full copy fits (the cap did not hold?)")
    except MemoryError:
        say("a full copy of the model: MemoryError, as intended")

    jv.random.set_seed(0)
    model = build(PartitionSpec("model"))
    held = sum(s.data.nbytes for w in model for s in w.value.addressable_shards)
    say(f"sharded: each process holds {held / 2**20:.0f} MiB of its shards")
    assert not model[0].value.is_fully_addressable
    # Lifted for the checkpoints: orbax starts threads, whose stacks take address space.
    resource.setrlimit(resource.RLIMIT_AS, unlimited)

    target = {w.name: w for w in model}
    with jv.CheckpointManager(os.path.join(directory, "run")) as mgr:
        mgr.save(1, target)  # each process writes only its own shards
    other = Mesh(np.array(jax.devices()).reshape(2, 4), ("rows", "cols"))
    with jv.sharding_rules({".*": PartitionSpec("rows", "cols")}, other):
        restored = jv.eval_shape(build_abstract)
    with jv.CheckpointManager(os.path.join(directory, "run")) as mgr:
        mgr.restore({w.name: w for w in restored})
    same = all(
        bool(jax.numpy.array_equal(a.value, b.value)) for a, b in zip(model, restored, strict=True)
    )
    layout = restored[0].sharding
    assert isinstance(layout, NamedSharding)  # the rules lay variables out on a mesh
    say(f"restored onto a 2x4 mesh: {layout.spec}, equal to the original: {same}")
    jax.distributed.shutdown()


def build_abstract() -> list[jv.Variable]:
    import jax.numpy as jnp

    import jaxvars as jv

    with jv.Store(), jv.variable_scope("model"):
        return [jv.Variable(jnp.zeros((ROWS, COLS)), name=f"w{i}") for i in range(LAYERS)]


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    # glibc keeps large freed blocks (each shard's random bits) unless told to map them.
    env["MALLOC_MMAP_THRESHOLD_"] = "1048576"
    with tempfile.TemporaryDirectory() as directory:
        workers = [
            subprocess.Popen([sys.executable, __file__, str(i), str(port), directory], env=env)
            for i in range(2)
        ]
        codes = [w.wait(timeout=900) for w in workers]
    if any(codes):
        sys.exit(f"a process failed: exit codes {codes}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
    else:
        main()
