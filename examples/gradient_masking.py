"""Gradient masking with jaxvars: freeze a layer, prune 90% of another, keep learning.

1. Freeze the first layer with `trainable=False`: it gets zero gradients and
   the optimiser never touches it.
2. Prune 90% of the second layer's weights, lottery-ticket style: zero the
   smallest-magnitude weights and mask them with an elementwise `trainable`
   mask. Under `optax.adamw` (whose weight decay would move every weight) the
   masked weights stay exactly zero, bit for bit, while the model still learns.

Run: python examples/gradient_masking.py
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxvars as jv

jv.random.set_seed(0)
STEPS = 200 if os.environ.get("JAXVARS_QUICK") else 800

# A regression task: y = sin(3 x0) + x1 * x2, from 8 noisy inputs.
rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(1024, 8)), jnp.float32)
y = jnp.sin(3 * x[:, :1]) + x[:, 1:2] * x[:, 2:3]


class Dense(jv.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.w = jv.Variable(jv.random.normal((n_in, n_out)) * np.sqrt(2.0 / n_in), name="w")
        self.b = jv.Variable(jnp.zeros(n_out), name="b")

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.w + self.b


class Net(jv.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = Dense(8, 128)
        self.hidden = Dense(128, 128)
        self.head = Dense(128, 1)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.embed(x))
        x = jax.nn.relu(self.hidden(x))
        return self.head(x)


net = Net()
opt = jv.Optimizer(optax.adamw(3e-3, weight_decay=1e-2), net)


@jv.jit
def train_step(net: Net, x: jax.Array, y: jax.Array) -> jax.Array:
    loss, grads = jv.value_and_grad(lambda: jnp.mean((net(x) - y) ** 2), net)()
    opt.apply_gradients(grads)
    return loss


def train(label: str) -> float:
    loss = [train_step(net, x, y) for _ in range(STEPS)][-1]
    print(f"{label:<44} loss {float(loss):.4f}")
    return float(loss)


print(f"{'untrained':<44} loss {float(jnp.mean((net(x) - y) ** 2)):.4f}")
train("1. all layers trainable")

# -- Freeze the first layer ------------------------------------------------------------
for variable in net.embed.variables:
    variable.trainable = False
frozen = [v.numpy() for v in net.embed.variables]
train("2. first layer frozen (trainable=False)")
unchanged = all(
    np.array_equal(a, v.numpy()) for a, v in zip(frozen, net.embed.variables, strict=True)
)
print(f"   frozen layer bit-identical after training: {unchanged}")
trainable = [path for path, v in net.named_variables().items() if v.trainable is not False]
print(f"   trainable variables now: {trainable}")

# -- Prune 90% of the hidden layer ---------------------------------------------------------
weights = net.hidden.w.numpy()
keep = np.abs(weights) >= np.quantile(np.abs(weights), 0.9)  # the largest 10%
net.hidden.w.assign(np.where(keep, weights, 0.0))
net.hidden.w.trainable = keep  # elementwise: only the kept 10% may change
print(f"{'   right after pruning':<44} loss {float(jnp.mean((net(x) - y) ** 2)):.4f}")
train("3. hidden layer pruned to 10% (mask), adamw")
after = net.hidden.w.numpy()
print(
    f"   pruned weights still exactly zero: {bool(np.all(after[~keep] == 0.0))} "
    f"({int((~keep).sum())} of {keep.size})"
)
print(f"   kept weights still learning: {not np.array_equal(after[keep], weights[keep])}")
print(
    f"   gradient of a pruned weight: "
    f"{float(jv.grad(lambda: jnp.mean((net(x) - y) ** 2), net.hidden.w)()[~keep][0])}"
)
net.summary()
