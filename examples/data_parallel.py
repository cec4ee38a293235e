"""Data-parallel and 2-D (data x model) sharded training with jaxvars, on 8 host CPUs.

The same MLP, the same data and the same initial values are trained three
ways: on one device, data-parallel over 8 devices (the batch split, the
parameters replicated), and over a 4 x 2 (data x model) mesh with the hidden
layer split Megatron-style. The model code never mentions devices:
jv.sharding_rules places the variables by name, and jv.jit keeps every
variable (optimiser state included) where it lives, step after step. Rules
match variables' full names, so the layers are named ("mlp/up/w").

Run: python examples/data_parallel.py
"""

import os

# Eight CPU devices, set before JAX starts (a GPU machine can use its own devices).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxvars as jv  # noqa: E402

STEPS = 20 if os.environ.get("JAXVARS_QUICK") else 100
devices = jax.devices("cpu")[:8]
rng = np.random.default_rng(0)
X = jnp.asarray(rng.normal(size=(256, 16)), jnp.float32)
Y = jnp.sin(X[:, :4].sum(axis=1, keepdims=True))


class Dense(jv.Module):
    def __init__(self, n_in: int, n_out: int, name: str | None = None) -> None:
        super().__init__(name=name)
        self.w = jv.Variable(jv.random.normal((n_in, n_out)) * np.sqrt(2 / n_in), name="w")
        self.b = jv.Variable(jnp.zeros(n_out), name="b")

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.w + self.b


class MLP(jv.Module):
    def __init__(self) -> None:
        super().__init__()
        # Named layers give variables stable names ("mlp/up/w") for the rules.
        self.up = Dense(16, 64, name="up")
        self.down = Dense(64, 1, name="down")

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.relu(self.up(x)))


def train(
    rules: dict[str, P] | None = None, mesh: Mesh | None = None, batch_spec: P | None = None
) -> tuple[np.ndarray, MLP, jv.Optimizer]:
    """Train a fresh model under the given sharding rules; returns losses and the model."""
    jv.random.set_seed(0)
    with jv.Store():
        if rules is None or mesh is None or batch_spec is None:
            model = MLP()
            opt = jv.Optimizer(optax.adam(1e-2), model)
            x, y = X, Y
        else:
            with jv.sharding_rules(rules, mesh):
                model = MLP()
                opt = jv.Optimizer(optax.adam(1e-2), model)
            x = jax.device_put(X, NamedSharding(mesh, batch_spec))
            y = jax.device_put(Y, NamedSharding(mesh, batch_spec))

        @jv.jit
        def step(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
            loss, grads = jv.value_and_grad(lambda: jnp.mean((model(x) - y) ** 2), model)()
            opt.apply_gradients(grads)
            return loss

        losses = np.array([float(step(model, x, y)) for _ in range(STEPS)])
        return losses, model, opt


def show(title: str, model: MLP, opt: jv.Optimizer) -> None:
    print(f"\n{title}")
    for path, v in model.named_variables().items():
        device, sharding = v.device, v.sharding
        if device is not None:
            where = f"{device.platform}:{device.id}"
        else:  # sharded over several devices: by the rules, on the mesh
            assert isinstance(sharding, NamedSharding)
            where = str(sharding.spec)
        print(f"  {path:<8} {str(v.shape):<9} {where}")
    mu = opt.state_variables["optimizer/0/mu/up/w"]
    print(f"  adam state mu/up/w is sharded like up/w: {mu.sharding == model.up.w.sharding}")


single, model, opt = train()
show("one device", model, opt)

data_mesh = Mesh(np.array(devices), ("data",))
replicated = {r".*": P()}
dp, model, opt = train(replicated, data_mesh, P("data"))
show("data parallel over 8 devices (batch split, parameters replicated)", model, opt)

mesh_2d = Mesh(np.array(devices).reshape(4, 2), ("data", "model"))
megatron = {r"up/w$": P(None, "model"), r"up/b$": P("model"), r"down/w$": P("model", None)}
two_d, model, opt = train(megatron, mesh_2d, P("data"))
show("2-D mesh, 4 (data) x 2 (model)", model, opt)

print(
    f"\nloss after {STEPS} steps: one device {single[-1]:.6f}, data parallel {dp[-1]:.6f}, "
    f"2-D {two_d[-1]:.6f}"
)
print("data parallel matches one device:", bool(np.allclose(dp, single, rtol=1e-4, atol=1e-6)))
print("2-D matches one device:", bool(np.allclose(two_d, single, rtol=1e-4, atol=1e-6)))
