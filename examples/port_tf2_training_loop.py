"""A TensorFlow 2 custom training loop, written with jaxvars.

TF's guides "Writing a training loop from scratch" and "Training checkpoints":
a ``tf.Module`` model, ``tf.GradientTape``, a ``tf.function`` train step,
metrics that are variables, and a ``tf.train.CheckpointManager`` that keeps
the last three checkpoints and resumes from the newest (``jv.CheckpointManager``,
on orbax-checkpoint: ``pip install "jaxvars[orbax]"``). The comment above a
jaxvars line is the TF line it replaces. Data: a generated regression task.

Run it twice: the second run resumes where the first stopped.
Run: python examples/port_tf2_training_loop.py [--fresh]
"""

import os
import pathlib
import shutil
import sys
import tempfile

import jax
import jax.numpy as jnp
import optax

import jaxvars as jv

QUICK = bool(os.environ.get("JAXVARS_QUICK"))
EPOCHS = 2 if QUICK else 5
STEPS_PER_EPOCH = 20 if QUICK else 100
CHECKPOINTS = pathlib.Path(tempfile.gettempdir()) / "jaxvars_tf2_loop"


# TF: class Dense(tf.Module):
class Dense(jv.Module):
    def __init__(self, n_in: int, n_out: int, name: str | None = None) -> None:
        super().__init__(name=name)
        # TF: self.w = tf.Variable(tf.random.normal([n_in, n_out]) * 0.1, name='w')
        self.w = jv.Variable(jv.random.normal((n_in, n_out)) * 0.1, name="w")
        # TF: self.b = tf.Variable(tf.zeros([n_out]), name='b')
        self.b = jv.Variable(jnp.zeros(n_out), name="b")

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.w + self.b


class Model(jv.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = Dense(8, 32)
        self.out = Dense(32, 1)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(jax.nn.relu(self.hidden(x)))


# TF: class Mean(tf.keras.metrics.Metric) with add_weight('total'), add_weight('count')
class Mean(jv.Module):
    def __init__(self, name: str | None = None) -> None:
        super().__init__(name=name)
        self.total = jv.Variable(0.0, name="total", trainable=False)
        self.count = jv.Variable(0.0, name="count", trainable=False)

    def update_state(self, values: jax.Array) -> None:
        # TF: self.total.assign_add(tf.reduce_sum(values)); self.count.assign_add(n)
        self.total += jnp.sum(values)
        self.count += jnp.size(values)

    def result(self) -> jax.Array:
        return self.total / jnp.maximum(self.count.value, 1.0)

    def reset_state(self) -> None:
        # TF: for v in self.variables: v.assign(tf.zeros_like(v))
        for v in self.variables:
            v.assign(jnp.zeros_like(v))


jv.random.set_seed(0)
true_w = jax.random.normal(jax.random.PRNGKey(42), (8, 1))


def batch(step: int, size: int = 64) -> tuple[jax.Array, jax.Array]:
    x = jax.random.normal(jax.random.PRNGKey(step), (size, 8))
    return x, jnp.sin(x @ true_w)


model = Model()
# TF: optimizer = tf.keras.optimizers.Adam(1e-2)
optimizer = jv.Optimizer(optax.adam(1e-2), model)
train_loss, val_loss = Mean(name="train_loss"), Mean(name="val_loss")
# TF: step = tf.Variable(0, dtype=tf.int64)
step = jv.Variable(0, name="step", trainable=False)


# TF: @tf.function
@jv.jit
def train_step(x: jax.Array, y: jax.Array) -> None:
    # TF: with tf.GradientTape() as tape:
    #         loss = tf.reduce_mean((model(x) - y) ** 2)
    #     grads = tape.gradient(loss, model.trainable_variables)
    loss, grads = jv.value_and_grad(lambda: jnp.mean((model(x) - y) ** 2), model)()
    # TF: optimizer.apply_gradients(zip(grads, model.trainable_variables))
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    train_loss.update_state(loss)
    step.assign_add(1)


# TF: @tf.function
@jv.jit
def val_step(x: jax.Array, y: jax.Array) -> None:
    val_loss.update_state(jnp.mean((model(x) - y) ** 2))


# TF: checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
checkpoint = {"model": model, "optimizer": optimizer, "step": step}


if "--fresh" in sys.argv or QUICK:
    shutil.rmtree(CHECKPOINTS, ignore_errors=True)
# TF: manager = tf.train.CheckpointManager(checkpoint, './tf_ckpts', max_to_keep=3)
manager = jv.CheckpointManager(CHECKPOINTS, max_to_keep=3)
# TF: checkpoint.restore(manager.latest_checkpoint)
if manager.latest_step() is not None:
    manager.restore(checkpoint)
    print(f"restored from step {manager.latest_step()}")
else:
    print("initializing from scratch")

for epoch in range(EPOCHS):
    # TF: train_loss.reset_state(); val_loss.reset_state()
    train_loss.reset_state()
    val_loss.reset_state()
    for _ in range(STEPS_PER_EPOCH):
        train_step(*batch(int(step)))
    val_step(*batch(-1, size=512))
    # TF: save_path = manager.save()
    manager.save(int(step), checkpoint)
    print(
        f"epoch {epoch}: step {int(step)}, train loss {float(train_loss.result()):.4f}, "
        f"val loss {float(val_loss.result()):.4f}, saved step {int(step)}"
    )

manager.close()  # waits for the last save, written in the background
print("checkpoints kept:", manager.all_steps())
