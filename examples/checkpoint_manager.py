"""Train, checkpoint with jv.CheckpointManager, "crash", resume: the same losses.

A small regression model trained with adam, with noise from ``jv.random`` in
every step (so the random stream is part of the state). Every 5 steps the
manager saves the model, the optimiser and the random stream, keeping the
newest 3 and the best by validation loss; saves are written in the
background. After step 20 the run "crashes" (everything is thrown away); a
fresh model and optimiser restore the latest step and train on. The losses
after resuming equal those of an uninterrupted run, bit for bit.

Run: python examples/checkpoint_manager.py
"""

import os
import tempfile
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import jaxvars as jv

STEPS = 30 if os.environ.get("JAXVARS_QUICK") else 60
CRASH_AT = 20
x = jax.random.normal(jax.random.PRNGKey(0), (64, 4))
y = jnp.sin(x.sum(axis=1, keepdims=True))


class Model(jv.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w1 = jv.Variable(jv.random.normal((4, 32)) * 0.5, name="w1")
        self.w2 = jv.Variable(jv.random.normal((32, 1)) * 0.2, name="w2")

    def __call__(self, inputs: jax.Array) -> jax.Array:
        return jnp.tanh(inputs @ self.w1) @ self.w2


def start() -> tuple[Model, Callable[[], jax.Array], dict[str, Any]]:
    """A fresh run: model, optimiser, a jitted step, and the checkpoint target."""
    jv.random.set_seed(0)
    model = Model()
    opt = jv.Optimizer(optax.adam(0.02), model)

    @jv.jit
    def step() -> jax.Array:
        noisy = x + 0.05 * jv.random.normal(x.shape)  # draws from the stream
        loss, grads = jv.value_and_grad(lambda: jnp.mean((model(noisy) - y) ** 2), model)()
        opt.apply_gradients(grads)
        return loss

    target = {"model": model, "optimizer": opt, "rng": jv.random.key_variable()}
    return model, step, target


def validation_loss(model: Model) -> float:
    return float(jnp.mean((model(x) - y) ** 2))


# The uninterrupted run, for comparison.
with jv.Store():
    step = start()[1]
    uninterrupted = [float(step()) for _ in range(STEPS)]

directory = os.path.join(tempfile.mkdtemp(), "run")
losses: list[float] = []
with jv.Store():
    model, step, target = start()
    with jv.CheckpointManager(
        directory, max_to_keep=3, save_interval_steps=5, best_metric="val_loss", best_mode="min"
    ) as manager:
        for i in range(1, CRASH_AT + 1):
            losses.append(float(step()))
            manager.save(i, target, metrics={"val_loss": validation_loss(model)})
        manager.wait()
        print("steps kept:", manager.all_steps(), " best:", manager.best_step())
print(f"crash after step {CRASH_AT}: the model, optimiser and stream are gone")

with jv.Store():
    model, step, target = start()  # a fresh run: new values, the stream reseeded
    with jv.CheckpointManager(directory) as manager:
        resumed_from = manager.restore(target)
    print(f"resumed from step {resumed_from}")
    losses += [float(step()) for _ in range(STEPS - resumed_from)]

print(f"loss at step {STEPS}: {losses[-1]:.6f} (uninterrupted: {uninterrupted[-1]:.6f})")
print("same losses as the uninterrupted run:", losses == uninterrupted)
