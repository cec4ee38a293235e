"""TensorFlow 1's "Sharing Variables" guide, end to end, with jaxvars.

An image filter of two 5x5 convolutions (NHWC, SAME padding) applied to two
images. Four ways to write it: the naive one that creates two sets of
variables, a dict of variables, a Module, and variable_scope/get_variable.

Run: python examples/sharing_variables.py
"""

import jax
import jax.numpy as jnp

import jaxvars as jv


def conv2d(images: jax.Array, kernel: jax.Array | jv.Variable) -> jax.Array:
    """tf.nn.conv2d(images, kernel, strides=[1, 1, 1, 1], padding="SAME")."""
    # jnp.asarray: a Variable's value (the type jax.lax is annotated with).
    return jax.lax.conv_general_dilated(
        images, jnp.asarray(kernel), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


jv.random.set_seed(0)
image1 = jv.random.normal((1, 16, 16, 32))
image2 = jv.random.normal((1, 16, 16, 32))


# -- The problem: every call creates a new set of variables --------------------------
def naive_image_filter(input_images: jax.Array) -> jax.Array:
    conv1_weights = jv.Variable(jv.random.normal((5, 5, 32, 32)), name="conv1_weights")
    conv1_biases = jv.Variable(jnp.zeros(32), name="conv1_biases")
    conv1 = conv2d(input_images, conv1_weights)
    relu1 = jax.nn.relu(conv1 + conv1_biases)

    conv2_weights = jv.Variable(jv.random.normal((5, 5, 32, 32)), name="conv2_weights")
    conv2_biases = jv.Variable(jnp.zeros(32), name="conv2_biases")
    conv2 = conv2d(relu1, conv2_weights)
    return jax.nn.relu(conv2 + conv2_biases)


# First call creates one set of variables; the second call creates another.
naive1 = naive_image_filter(image1)
naive2 = naive_image_filter(image1)
print("naive: same image, two calls, same result?", bool(jnp.allclose(naive1, naive2)))

# -- A dict of variables created outside the function ---------------------------------
variables_dict = {
    "conv1_weights": jv.Variable(jv.random.normal((5, 5, 32, 32)), name="conv1_weights"),
    "conv1_biases": jv.Variable(jnp.zeros(32), name="conv1_biases"),
    "conv2_weights": jv.Variable(jv.random.normal((5, 5, 32, 32)), name="conv2_weights"),
    "conv2_biases": jv.Variable(jnp.zeros(32), name="conv2_biases"),
}


def dict_image_filter(input_images: jax.Array, variables: dict[str, jv.Variable]) -> jax.Array:
    conv1 = conv2d(input_images, variables["conv1_weights"])
    relu1 = jax.nn.relu(conv1 + variables["conv1_biases"])
    conv2 = conv2d(relu1, variables["conv2_weights"])
    return jax.nn.relu(conv2 + variables["conv2_biases"])


# The 2 calls to dict_image_filter() now use the same variables
result1 = dict_image_filter(image1, variables_dict)
result2 = dict_image_filter(image2, variables_dict)
print(
    "dict: same image twice gives the same result?",
    bool(jnp.allclose(result1, dict_image_filter(image1, variables_dict))),
)


# -- A class: the module owns its variables ----------------------------------------------
class ConvRelu(jv.Module):
    def __init__(
        self, kernel_shape: tuple[int, ...], bias_shape: tuple[int, ...], name: str | None = None
    ) -> None:
        super().__init__(name=name)
        self.weights = jv.Variable(jv.random.normal(kernel_shape), name="weights")
        self.biases = jv.Variable(jnp.zeros(bias_shape), name="biases")

    def __call__(self, images: jax.Array) -> jax.Array:
        return jax.nn.relu(conv2d(images, self.weights) + self.biases)


class ImageFilter(jv.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvRelu((5, 5, 32, 32), (32,))
        self.conv2 = ConvRelu((5, 5, 32, 32), (32,))

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.conv2(self.conv1(images))


image_filter = ImageFilter()
module1, module2 = image_filter(image1), image_filter(image2)
print("module: variables", list(image_filter.named_variables()))


# -- variable_scope and get_variable ------------------------------------------------------
def conv_relu(input_images: jax.Array, kernel_shape: list[int], bias_shape: list[int]) -> jax.Array:
    # Create variable named "weights".
    weights = jv.get_variable("weights", kernel_shape, initializer=jax.nn.initializers.normal(1.0))
    # Create variable named "biases".
    biases = jv.get_variable("biases", bias_shape, initializer=jax.nn.initializers.zeros)
    conv = conv2d(input_images, weights)
    return jax.nn.relu(conv + biases)


def my_image_filter(input_images: jax.Array) -> jax.Array:
    with jv.variable_scope("conv1"):
        # Variables created here will be named "conv1/weights", "conv1/biases".
        relu1 = conv_relu(input_images, [5, 5, 32, 32], [32])
    with jv.variable_scope("conv2"):
        # Variables created here will be named "conv2/weights", "conv2/biases".
        return conv_relu(relu1, [5, 5, 32, 32], [32])


store = jv.Store()
with store:
    with jv.variable_scope("image_filters") as scope:
        result1 = my_image_filter(image1)
        scope.reuse_variables()
        result2 = my_image_filter(image2)

print("variable_scope: the store holds", len(store), "variables:", list(store))
weights = {name: v.value for name, v in store.items()}


def filter_with(images: jax.Array) -> jax.Array:
    """The filter written out with the stored variables: what both calls must have used."""
    relu1 = jax.nn.relu(
        conv2d(images, weights["image_filters/conv1/weights"])
        + weights["image_filters/conv1/biases"]
    )
    return jax.nn.relu(
        conv2d(relu1, weights["image_filters/conv2/weights"])
        + weights["image_filters/conv2/biases"]
    )


print(
    "variable_scope: image1 went through the shared filter:",
    bool(jnp.allclose(result1, filter_with(image1), atol=1e-4)),
)
print(
    "variable_scope: image2 went through the shared filter:",
    bool(jnp.allclose(result2, filter_with(image2), atol=1e-4)),
)

# Without reuse, the second call is refused, as in TensorFlow:
with store:
    try:
        with jv.variable_scope("image_filters"):
            my_image_filter(image2)
    except ValueError as e:
        print("without reuse:", str(e).split(". ")[0])
