"""TensorFlow 1's CIFAR-10 tutorial, its variable code ported line for line to jaxvars.

From ``cifar10.py``: ``_variable_on_cpu``, ``_variable_with_weight_decay``
(weight decay as a regularizer), the conv/local layers in variable scopes,
``global_step`` and ``tf.train.ExponentialMovingAverage``. From
``cifar10_multi_gpu_train.py``: towers that share their variables through
``tf.get_variable_scope().reuse_variables()``, with the gradients averaged.
From ``cifar10_eval.py``: evaluating with the moving averages of the weights.
Images are generated (ten classes of noisy patterns), so it runs anywhere.

The comment above a line is the TF line it replaces. What changes: the graph
and the session go; the whole tower loop is one ``jv.jit`` step, which runs
its Python on the first call, as TF ran graph-building code once.

Run: python examples/port_tf1_cifar10.py
"""

import os
from functools import partial

import jax
import jax.numpy as jnp
import optax

import jaxvars as jv

QUICK = bool(os.environ.get("JAXVARS_QUICK"))
NUM_CLASSES = 10
IMAGE_SIZE = 24
NUM_TOWERS = 2  # cifar10_multi_gpu_train.py's --num_gpus
BATCH_PER_TOWER = 8 if QUICK else 32
STEPS = 12 if QUICK else 150
MOVING_AVERAGE_DECAY = 0.9999
INITIAL_LEARNING_RATE = 0.05
DECAY_STEPS = 100  # TF: NUM_EPOCHS_PER_DECAY * examples per epoch / batch size
LEARNING_RATE_DECAY_FACTOR = 0.1


# -- cifar10.py: the model's variables ------------------------------------------------------


def _variable_on_cpu(
    name: str, shape: list[int], initializer: jax.nn.initializers.Initializer
) -> jv.Variable:
    # TF: with tf.device('/cpu:0'):
    #         var = tf.get_variable(name, shape, initializer=initializer, dtype=tf.float32)
    # TF kept variables on the host to share them between GPU towers. A jitted
    # step runs where its inputs live, so on accelerators drop the jv.device line.
    with jv.device("cpu:0"):
        return jv.get_variable(name, shape, initializer=initializer, dtype=jnp.float32)


def _variable_with_weight_decay(
    name: str, shape: list[int], stddev: float, wd: float | None
) -> jv.Variable:
    # TF: var = _variable_on_cpu(name, shape, tf.truncated_normal_initializer(stddev=stddev))
    #     if wd is not None:
    #         weight_decay = tf.multiply(tf.nn.l2_loss(var), wd, name='weight_loss')
    #         tf.add_to_collection('losses', weight_decay)
    # The decay term is a regularizer: jv.regularization_loss() sums it from the
    # current value (a collection of loss tensors has no meaning without a graph).
    with jv.device("cpu:0"):
        return jv.get_variable(
            name,
            shape,
            initializer=jax.nn.initializers.truncated_normal(stddev),
            regularizer=None if wd is None else (lambda x: wd * 0.5 * jnp.sum(x * x)),
        )


def conv2d(x: jax.Array, kernel: jv.Variable) -> jax.Array:
    # TF: tf.nn.conv2d(x, kernel, [1, 1, 1, 1], padding='SAME')
    return jax.lax.conv_general_dilated(
        x, kernel.value, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def max_pool(x: jax.Array) -> jax.Array:
    # TF: tf.nn.max_pool(x, ksize=[1, 3, 3, 1], strides=[1, 2, 2, 1], padding='SAME')
    pooled: jax.Array = jax.lax.reduce_window(  # annotated: JAX types its result Any
        x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME"
    )
    return pooled


def lrn(
    x: jax.Array, radius: int = 4, bias: float = 1.0, alpha: float = 0.001 / 9.0, beta: float = 0.75
) -> jax.Array:
    # TF: tf.nn.lrn(x, 4, bias=1.0, alpha=0.001 / 9.0, beta=0.75)
    squares = jnp.pad(x * x, ((0, 0), (0, 0), (0, 0), (radius, radius)))
    window = sum(squares[..., i : i + x.shape[-1]] for i in range(2 * radius + 1))
    return x / (bias + alpha * window) ** beta


def inference(images: jax.Array) -> jax.Array:
    """cifar10.inference: conv1, pool1, norm1, conv2, norm2, pool2, local3, local4, linear."""
    # TF: with tf.variable_scope('conv1') as scope:
    with jv.variable_scope("conv1"):
        kernel = _variable_with_weight_decay("weights", [5, 5, 3, 64], stddev=5e-2, wd=None)
        biases = _variable_on_cpu("biases", [64], jax.nn.initializers.constant(0.0))
        conv1 = jax.nn.relu(conv2d(images, kernel) + biases)
    norm1 = lrn(max_pool(conv1))

    with jv.variable_scope("conv2"):
        kernel = _variable_with_weight_decay("weights", [5, 5, 64, 64], stddev=5e-2, wd=None)
        biases = _variable_on_cpu("biases", [64], jax.nn.initializers.constant(0.1))
        conv2 = jax.nn.relu(conv2d(norm1, kernel) + biases)
    pool2 = max_pool(lrn(conv2))

    with jv.variable_scope("local3"):
        # TF: reshape = tf.reshape(pool2, [images.get_shape().as_list()[0], -1])
        reshape = pool2.reshape(images.shape[0], -1)
        dim = reshape.shape[1]
        weights = _variable_with_weight_decay("weights", [dim, 384], stddev=0.04, wd=0.004)
        biases = _variable_on_cpu("biases", [384], jax.nn.initializers.constant(0.1))
        local3 = jax.nn.relu(reshape @ weights + biases)

    with jv.variable_scope("local4"):
        weights = _variable_with_weight_decay("weights", [384, 192], stddev=0.04, wd=0.004)
        biases = _variable_on_cpu("biases", [192], jax.nn.initializers.constant(0.1))
        local4 = jax.nn.relu(local3 @ weights + biases)

    with jv.variable_scope("softmax_linear"):
        weights = _variable_with_weight_decay("weights", [192, NUM_CLASSES], 1 / 192.0, None)
        biases = _variable_on_cpu("biases", [NUM_CLASSES], jax.nn.initializers.constant(0.0))
        return local4 @ weights + biases


def tower_loss(images: jax.Array, labels: jax.Array) -> jax.Array:
    """cifar10.loss for one tower: cross entropy plus the weight decay terms."""
    logits = inference(images)
    # TF: cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    cross_entropy = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    # TF: tf.add_n(tf.get_collection('losses', scope), name='total_loss')
    return cross_entropy + jv.regularization_loss()


# -- cifar10_multi_gpu_train.py: towers sharing variables ---------------------------------------

# TF: global_step = tf.get_variable('global_step', [],
#         initializer=tf.constant_initializer(0), trainable=False)
global_step = jv.get_variable("global_step", [], jnp.int32, initializer=0, trainable=False)
# TF: lr = tf.train.exponential_decay(INITIAL_LEARNING_RATE, global_step, decay_steps,
#         LEARNING_RATE_DECAY_FACTOR, staircase=True); opt = tf.train.GradientDescentOptimizer(lr)
schedule = optax.exponential_decay(
    INITIAL_LEARNING_RATE, DECAY_STEPS, LEARNING_RATE_DECAY_FACTOR, staircase=True
)
# TF: variable_averages = tf.train.ExponentialMovingAverage(MOVING_AVERAGE_DECAY, global_step)
variable_averages = jv.ExponentialMovingAverage(MOVING_AVERAGE_DECAY, num_updates=global_step)
# Made on the first step, once the towers made the variables (as in TF).
optimizer: jv.Optimizer | None = None


@jv.jit
def train_step(images: jax.Array, labels: jax.Array) -> jax.Array:
    global optimizer
    tower_grads, losses = [], []
    # TF: with tf.variable_scope(tf.get_variable_scope()):
    with jv.variable_scope(jv.get_variable_scope()):
        for i in range(NUM_TOWERS):
            # TF: with tf.device('/gpu:%d' % i), tf.name_scope('tower_%d' % i) as scope:
            with jv.name_scope(f"tower_{i}"):
                part = slice(i * BATCH_PER_TOWER, (i + 1) * BATCH_PER_TOWER)
                image_batch, label_batch = images[part], labels[part]
                # TF: loss = tower_loss(scope, image_batch, label_batch)
                losses.append(tower_loss(image_batch, label_batch))
                # TF: grads = opt.compute_gradients(loss)
                variables = jv.trainable_variables()
                grads = jv.grad(partial(tower_loss, image_batch, label_batch), variables)()
                tower_grads.append(grads)
            # TF: tf.get_variable_scope().reuse_variables()
            jv.get_variable_scope().reuse_variables()
    # TF: grads = average_gradients(tower_grads)
    grads = [sum(g) / NUM_TOWERS for g in zip(*tower_grads, strict=True)]
    if optimizer is None:
        optimizer = jv.Optimizer(optax.sgd(schedule), jv.trainable_variables())
    # TF: apply_gradient_op = opt.apply_gradients(grads, global_step=global_step)
    shared = jv.trainable_variables()  # the variables every tower differentiated
    optimizer.apply_gradients(list(zip(grads, shared, strict=True)), global_step=global_step)
    # TF: variables_averages_op = variable_averages.apply(tf.trainable_variables())
    variable_averages.apply(jv.trainable_variables())
    return jnp.mean(jnp.stack(losses))


# -- generated data and cifar10_eval.py --------------------------------------------------------

jv.random.set_seed(0)
patterns = jax.random.normal(jax.random.PRNGKey(0), (NUM_CLASSES, IMAGE_SIZE, IMAGE_SIZE, 3))


def batch(step: int, size: int) -> tuple[jax.Array, jax.Array]:
    key = jax.random.PRNGKey(step + 1)
    labels = jax.random.randint(key, (size,), 0, NUM_CLASSES)
    noise = jax.random.normal(jax.random.fold_in(key, 1), (size, IMAGE_SIZE, IMAGE_SIZE, 3))
    return patterns[labels] + 2.0 * noise, labels


@jv.jit
def precision_at_1(images: jax.Array, labels: jax.Array) -> jax.Array:
    # cifar10_eval.py builds its own graph, getting the trained variables.
    with jv.variable_scope(jv.get_variable_scope(), reuse=True):
        logits = inference(images)
    # TF: top_k_op = tf.nn.in_top_k(logits, labels, 1)
    return jnp.mean(jnp.argmax(logits, -1) == labels)


for step in range(STEPS):
    loss = train_step(*batch(step, NUM_TOWERS * BATCH_PER_TOWER))
    if step % max(1, STEPS // 5) == 0 or step == STEPS - 1:
        print(f"step {int(global_step):4d}  loss {float(loss):.3f}")

weights = jv.default_store()["local3/weights"]
print(f"variables: {len(jv.trainable_variables())} trainable, shared by {NUM_TOWERS} towers")
print(f"weight decay now: {float(jv.regularization_loss()):.4f}")
print(f"shadow of {weights.name}: {variable_averages.average(weights).name}")
test_images, test_labels = batch(10_000, 256)
print(f"precision @ 1, trained weights:  {float(precision_at_1(test_images, test_labels)):.3f}")
# TF: saver = tf.train.Saver(variable_averages.variables_to_restore()); saver.restore(...)
with variable_averages.swapped():
    averaged = float(precision_at_1(test_images, test_labels))
print(f"precision @ 1, averaged weights: {averaged:.3f}")
