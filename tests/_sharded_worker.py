"""One process of the two-process sharding tests (run by tests/test_sharded_init.py).

Usage: python _sharded_worker.py PROCESS_ID NUM_PROCESSES PORT OUT.npz [CHECKPOINT_DIR]
Each process has 2 CPU devices; together they form a 4-device global mesh.
It creates sharded variables from callables and records, for each, the
shards this process holds (their index and data) and the random stream after.
With CHECKPOINT_DIR it then saves them with jv.CheckpointManager and restores
them onto another mesh, recording the restored shards instead.
"""

import os
import sys


def main() -> None:
    process_id, num_processes, port, out = sys.argv[1:5]
    checkpoints = sys.argv[5] if len(sys.argv) > 5 else None
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        f"127.0.0.1:{port}", num_processes=int(num_processes), process_id=int(process_id)
    )
    import numpy as np
    from jax.sharding import Mesh, PartitionSpec

    import jaxvars as jv

    mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "model"))
    jv.random.set_seed(0)
    with jv.sharding_rules(
        {"w": PartitionSpec("data", "model"), "b": PartitionSpec("model")}, mesh
    ):
        w = jv.get_variable("w", (8, 6), initializer=jax.nn.initializers.normal(1.0))
        b = jv.Variable(lambda: jv.random.uniform((6,)), name="b")
    record = {"after": np.asarray(jv.random.normal((3,)))}  # the stream advanced as eagerly
    if checkpoints is not None:
        with jv.CheckpointManager(checkpoints) as mgr:
            mgr.save(1, {"w": w, "b": b})  # each process writes its own shards
        other = Mesh(np.array(jax.devices()).reshape(4), ("all",))
        with jv.sharding_rules({"w": PartitionSpec("all"), "b": PartitionSpec()}, other):
            w = jv.eval_shape(lambda: jv.Variable(np.zeros((8, 6), np.float32), name="w"))
            b = jv.eval_shape(lambda: jv.Variable(np.zeros(6, np.float32), name="b"))
        with jv.CheckpointManager(checkpoints) as mgr:
            mgr.restore({"w": w, "b": b})
    for variable in (w, b):
        assert not variable.value.is_fully_addressable
        shards = variable.value.addressable_shards
        record[f"{variable.name}/count"] = np.array(len(shards))
        for i, shard in enumerate(shards):
            starts = [s.start or 0 for s in shard.index]
            bounds = zip(shard.index, variable.shape, strict=True)
            stops = [n if s.stop is None else s.stop for s, n in bounds]
            record[f"{variable.name}/{i}/index"] = np.array([starts, stops])
            record[f"{variable.name}/{i}/data"] = np.asarray(shard.data)
    np.savez(out, **record)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
