"""One process of the two-process training test (run by tests/test_distributed.py).

Usage: python _distributed_worker.py PROCESS_ID NUM_PROCESSES PORT OUT.npz
Each process has 2 CPU devices; together they form a 4-device global mesh.
"""

import os
import sys


def main() -> None:
    process_id, num_processes, port, out = sys.argv[1:5]
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        f"127.0.0.1:{port}", num_processes=int(num_processes), process_id=int(process_id)
    )
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    sys.path.insert(0, os.path.dirname(__file__))
    from _training import global_batch, train

    mesh = Mesh(np.array(jax.devices()), ("data",))
    rules = {r".*": PartitionSpec()}
    x, y = global_batch()
    per_process = x.shape[0] // jax.process_count()
    rows = slice(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    x = jax.make_array_from_process_local_data(sharding, x[rows])
    y = jax.make_array_from_process_local_data(sharding, y[rows])
    losses, variables = train(x, y, rules=rules, mesh=mesh)
    np.savez(out, losses=losses, devices=len(jax.devices()), **variables)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
