"""The small models the tests train: one Dense layer and an MLP of them."""

import jax
import jax.numpy as jnp

import jaxvars as jv


class Dense(jv.Module):
    def __init__(self, n_in, n_out, scale=1.0, name=None):
        super().__init__(name=name)
        self.w = jv.Variable(jv.random.normal((n_in, n_out)) * scale, name="w")
        self.b = jv.Variable(jnp.zeros(n_out), name="b")

    def __call__(self, x):
        return x @ self.w + self.b


class MLP(jv.Module):
    """Dense layers (paths ``layers/0/w``, ...) with ReLU between them."""

    def __init__(self, sizes, scale=1.0):
        super().__init__()
        self.layers = [Dense(m, n, scale) for m, n in zip(sizes[:-1], sizes[1:], strict=True)]

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)
