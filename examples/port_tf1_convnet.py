"""A TF1 convnet ported to jaxvars, restored from the checkpoint TensorFlow trained.

The model is TF's own code, line for line: ``variable_scope`` and
``get_variable`` give the variables TF's names (``conv1/weights``, ...), so
``jv.restore`` needs no map to read the ``tf.compat.v1.train.Saver``
checkpoint, and TensorFlow is not installed. The port then computes TF's
logits for TF's probe input; the same again with the
``ExponentialMovingAverage`` shadows (``<name>/ExponentialMovingAverage``)
in place of the weights, as TF1's evaluation scripts do.

Run: python examples/port_tf1_convnet.py [checkpoint directory]
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxvars as jv

CHECKPOINT = Path(__file__).parent.parent / "tests" / "data" / "tf_checkpoints" / "tf1_convnet"


def conv(x: jax.Array, scope: str, n_in: int, n_out: int) -> jax.Array:
    # TF: with tf.variable_scope(scope):
    with jv.variable_scope(scope):
        # TF: weights = tf.get_variable("weights", [3, 3, n_in, n_out],
        #                               initializer=tf.truncated_normal_initializer(stddev=0.1))
        weights = jv.get_variable(
            "weights", [3, 3, n_in, n_out], initializer=jax.nn.initializers.truncated_normal(0.1)
        )
        # TF: biases = tf.get_variable("biases", [n_out], initializer=tf.constant_initializer(0.1))
        biases = jv.get_variable("biases", [n_out], initializer=jax.nn.initializers.constant(0.1))
    # TF: tf.nn.relu(tf.nn.conv2d(x, weights, strides=[1, 1, 1, 1], padding="SAME") + biases)
    dims = ("NHWC", "HWIO", "NHWC")
    return jax.nn.relu(
        jax.lax.conv_general_dilated(x, weights.value, (1, 1), "SAME", dimension_numbers=dims)
        + biases
    )


def logits_of(images: jax.Array) -> jax.Array:
    h = conv(images, "conv1", 3, 4)
    # TF: tf.nn.max_pool2d(h, ksize=2, strides=2, padding="SAME")
    h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")
    h = conv(h, "conv2", 4, 8)
    # TF: tf.reshape(tf.reduce_mean(h, axis=[1, 2]), [-1, 8])
    h = jnp.mean(h, axis=(1, 2)).reshape(-1, 8)
    # TF: tf.matmul(h, tf.get_variable("logits/weights", [8, 10])) + tf.get_variable(...)
    weights = jv.get_variable("logits/weights", [8, 10])
    biases = jv.get_variable("logits/biases", [10], initializer=jax.nn.initializers.zeros)
    return h @ weights + biases


def forward(images: jax.Array) -> jax.Array:
    # TF: with tf.variable_scope(tf.get_variable_scope(), reuse=tf.AUTO_REUSE):
    with jv.variable_scope(jv.get_variable_scope(), reuse=jv.AUTO_REUSE):
        return logits_of(images)


def main(directory: Path) -> None:
    outputs = np.load(directory / "outputs.npz")
    probe = jnp.asarray(outputs["probe"])
    forward(probe)  # builds the variables (random until restored)
    # TF: global_step = tf.train.get_or_create_global_step() (int64; int32 here, x64 off)
    global_step = jv.get_variable("global_step", [], dtype=jnp.int32, trainable=False)

    store = jv.default_store()
    prefix = jv.latest_checkpoint(directory)  # TF: tf.train.latest_checkpoint(directory)
    assert prefix is not None, f"no TensorFlow checkpoint in {directory}"
    print("checkpoint:", Path(prefix).name, "holds", len(jv.list_variables(prefix)), "values")
    # The names are TF's, so no map; Adam's slots and the moving averages are
    # not restored (strict=False).
    jv.restore(prefix, store, strict=False)
    logits = forward(probe)
    difference = float(jnp.max(jnp.abs(logits - outputs["logits"])))
    print("global_step:", int(global_step.value))
    print("logits (port):", np.round(np.asarray(logits[0, :4]), 5))
    print("logits (TF):  ", np.round(outputs["logits"][0, :4], 5))
    print(f"max abs difference: {difference:.2e}")
    assert difference <= 1e-5, difference

    # TF: saver = tf.train.Saver(ema.variables_to_restore()); saver.restore(sess, path)
    trained = jv.trainable_variables()
    jv.restore(prefix, trained, strict=False, map=lambda name: name + "/ExponentialMovingAverage")
    logits = forward(probe)
    difference = float(jnp.max(jnp.abs(logits - outputs["logits_ema_weights"])))
    print(f"with the moving averages, max abs difference: {difference:.2e}")
    assert difference <= 1e-5, difference


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else CHECKPOINT)
