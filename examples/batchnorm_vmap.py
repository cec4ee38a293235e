"""Batch-norm running statistics updated under jv.vmap with axis_name.

The layer is written for one example; jv.vmap maps it over the batch. Its
running mean and variance are broadcast variables (shared by every lane),
updated with reductions over the batch axis (jax.lax.pmean), so every lane
assigns the same value: allowed, and the statistics match the batch's.
Assigning a per-example value instead is an error naming the variable.

Run:  python examples/batchnorm_vmap.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jaxvars as jv


class BatchNorm(jv.Module):
    def __init__(self, features: int, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum
        self.mean = jv.Variable(jnp.zeros(features), name="mean", trainable=False)
        self.var = jv.Variable(jnp.ones(features), name="var", trainable=False)

    def __call__(self, x: jax.Array, training: bool) -> jax.Array:
        """``x``: one example of shape (features,); mapped over the batch by jv.vmap."""
        if training:
            # Annotated: jax.lax.pmean is not, so its results would be Any.
            mean: jax.Array = jax.lax.pmean(x, "batch")
            var: jax.Array = jax.lax.pmean((x - mean) ** 2, "batch")
            m = self.momentum
            self.mean.assign(m * self.mean + (1 - m) * mean)
            self.var.assign(m * self.var + (1 - m) * var)
        else:
            mean, var = self.mean.value, self.var.value
        return (x - mean) / jnp.sqrt(var + 1e-5)


def main() -> None:
    norm = BatchNorm(3)
    step = jv.jit(jv.vmap(lambda x: norm(x, training=True), axis_name="batch"))
    rng = np.random.default_rng(0)
    batches = [
        rng.normal(loc=[1.0, -2.0, 5.0], scale=[1.0, 0.5, 2.0], size=(64, 3)) for _ in range(50)
    ]
    outputs = [step(jnp.asarray(batch).astype(jnp.float32)) for batch in batches]
    normalised = outputs[-1]
    print("running mean", np.round(norm.mean.numpy(), 2), "(data: [1, -2, 5])")
    print("running var ", np.round(norm.var.numpy(), 2), "(data: [1, 0.25, 4])")
    print("batch after normalising: mean", np.round(np.asarray(normalised.mean(0)), 3))
    np.testing.assert_allclose(norm.mean.numpy(), [1.0, -2.0, 5.0], atol=0.3)
    evaluate = jv.vmap(lambda x: norm(x, training=False))
    print(
        "eval output for the data mean:",
        np.round(np.asarray(evaluate(jnp.array([[1.0, -2.0, 5.0]]))), 3),
    )

    def per_example(x: jax.Array) -> jax.Array:
        norm.mean.assign(x)  # differs per lane: refused
        return x

    try:
        jv.vmap(per_example)(jnp.ones((4, 3)))
    except ValueError as e:
        print("per-example assignment refused:", str(e).split(":")[0] + ": ...")


if __name__ == "__main__":
    main()
