"""Train a small MLP with jaxvars: a jitted training loop on CPU, no download needed.

The data set is three interleaved spirals generated here (2,400 points, 3
classes). The model is a jv.Module, the optimiser optax's adam through
jv.Optimizer, and each step (a random minibatch drawn from jv.random, the loss,
the gradient and the update) is one jv.jit call.

Run:  python examples/train_mlp.py [--steps N] [--plot loss.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from types import ModuleType

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxvars as jv


def spirals(
    points_per_class: int = 800, classes: int = 3, seed: int = 0
) -> tuple[jax.Array, jax.Array]:
    """Interleaved 2-D spirals, one per class, with a little noise."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label in range(classes):
        radius = np.linspace(0.05, 1.0, points_per_class)
        angle = label * 2 * np.pi / classes + radius * 3.0 * np.pi
        angle += rng.normal(scale=0.15, size=points_per_class)
        xs.append(np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1))
        ys.append(np.full(points_per_class, label))
    return jnp.asarray(np.concatenate(xs), jnp.float32), jnp.asarray(np.concatenate(ys))


class Dense(jv.Module):
    def __init__(self, n_in: int, n_out: int, name: str | None = None) -> None:
        super().__init__(name=name)
        self.w = jv.Variable(jv.random.normal((n_in, n_out)) * np.sqrt(2.0 / n_in), name="w")
        self.b = jv.Variable(jnp.zeros(n_out), name="b")

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.w + self.b


class MLP(jv.Module):
    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.layers = [Dense(m, n) for m, n in zip(sizes[:-1], sizes[1:], strict=True)]

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


def plotting() -> ModuleType:
    """matplotlib's pyplot, or exit with how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("--plot needs matplotlib: pip install -e '.[plot]'")
    return plt


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    quick = bool(os.environ.get("JAXVARS_QUICK"))
    parser.add_argument("--steps", type=int, default=800 if quick else 3000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--plot", metavar="FILE.png", help="save the loss curve (needs matplotlib)")
    args = parser.parse_args()
    plt = plotting() if args.plot else None  # fail before training, not after

    jv.random.set_seed(0)
    x, y = spirals()
    model = MLP([2, 64, 64, 3])
    opt = jv.Optimizer(optax.adam(3e-3), model)
    model.summary()

    @jv.jit
    def train_step(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
        batch = jax.random.choice(jv.random.next_key(), x.shape[0], (args.batch,))

        def loss() -> jax.Array:
            logits = model(x[batch])
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y[batch]))

        value, grads = jv.value_and_grad(loss, model)()
        opt.apply_gradients(grads)
        return value

    @jv.jit
    def accuracy(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.mean(jnp.argmax(model(x), axis=-1) == y)

    losses = [train_step(model, x, y)]  # the first step compiles: not counted in steps/s
    float(losses[0])
    window_start, window_step = time.perf_counter(), 1
    redraw = sys.stdout.isatty()  # a log file gets a line per update, not \r redraws
    for step in range(2, args.steps + 1):
        losses.append(train_step(model, x, y))
        if step % 100 == 0 or step == args.steps:
            loss = float(losses[-1])  # waits for the step, so the rate is honest
            now = time.perf_counter()
            rate = (step - window_step) / (now - window_start)
            window_start, window_step = now, step
            line = f"step {step:5d}/{args.steps}  loss {loss:.4f}  {rate:6.0f} steps/s"
            if redraw:
                print(f"\r{line}", end="", flush=True)
            else:
                print(line, flush=True)
    if redraw:
        print()
    print(
        f"trained {int(opt.iterations)} steps; accuracy on the spirals: "
        f"{float(accuracy(model, x, y)):.1%}"
    )

    if plt is not None:
        plt.figure(figsize=(6, 3.5))
        plt.plot(np.asarray(jnp.stack(losses)))
        plt.xlabel("step")
        plt.ylabel("cross-entropy")
        plt.yscale("log")
        plt.title("jaxvars MLP on three spirals")
        plt.tight_layout()
        plt.savefig(args.plot, dpi=120)
        print(f"loss curve saved to {args.plot}")


if __name__ == "__main__":
    main()
