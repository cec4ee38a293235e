"""Treescope renders jaxvars objects with their names, masks and shardings (the
Modules guide); the test extra installs treescope (extra ``treescope``)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import treescope
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxvars as jv


class Dense(jv.Module):
    def __init__(self):
        super().__init__()
        mask = np.array([[True, False, True]] * 2)
        self.w = jv.Variable(jnp.ones((2, 3)), name="w", trainable=mask)
        mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
        sharding = NamedSharding(mesh, PartitionSpec("data", "model"))
        self.table = jv.Variable(jnp.zeros((8, 4)), name="table", sharding=sharding)
        self.rate = 0.5


def test_a_module_shows_its_variables_names_masks_and_shardings():
    text = treescope.render_to_text(Dense())
    assert text.startswith("Dense(")
    assert "name='dense/w'" in text and "true:4 false:2" in text  # the mask
    assert "spec=P('data', 'model')" in text and "rate=0.5" in text


def test_abstract_variables_stores_and_optimizers():
    abstract = jv.eval_shape(lambda: jv.Variable(jnp.ones(3), name="lazy"))
    text = treescope.render_to_text(abstract)
    assert "shape=(3,)" in text and "value=" not in text
    store = jv.Store()
    with store:
        jv.get_variable("g", [2])
    assert treescope.render_to_text(store).startswith("Store({\n  'g': Variable(")
    model = Dense()
    opt = jv.Optimizer(optax.sgd(0.1), model)
    assert "name='optimizer/iterations'" in treescope.render_to_text(opt)
