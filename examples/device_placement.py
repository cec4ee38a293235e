"""The device placement snippets of TensorFlow's variables guide, with jaxvars.

Runs on whatever devices exist: on a CPU-only machine "GPU:0" does not exist,
and soft placement (on by default, as in TensorFlow) falls back to the default
device with a warning instead of failing.

Run: python examples/device_placement.py
"""

import logging

import jax
import jax.numpy as jnp

import jaxvars as jv

logging.basicConfig(level=logging.INFO, format="  [%(name)s %(levelname)s] %(message)s")
# Uncomment to see where your variables get placed, as tf.debugging.set_log_device_placement.
jv.set_log_device_placement(True)
print("devices:", [f"{d.platform}:{d.id}" for d in jax.devices()])

# Place a variable and a tensor on the CPU, even if a GPU is available.
with jv.device("CPU:0"):
    # Create some tensors
    a = jv.Variable([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    b = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    c = jnp.matmul(a.value, b)  # .value: jax.numpy's ArrayLike type lists no Variable

print(c)

# Set a variable's location on one device and compute on another. The operands
# are copied to the device of the computation.
with jv.device("CPU:0"):
    a = jv.Variable([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    row = jv.Variable([[1.0, 2.0, 3.0]])

with jv.device("GPU:0"):
    # Element-wise multiply
    k = a * row

print(k)
print("k computed on:", [f"{d.platform}:{d.id}" for d in k.devices()])
