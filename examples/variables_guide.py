"""TensorFlow's "Introduction to Variables" guide, snippet by snippet, with jaxvars.

Run: python examples/variables_guide.py
(Device placement snippets are in examples/device_placement.py.)
"""

import jax.numpy as jnp

import jaxvars as jv

# -- Create a variable ----------------------------------------------------------------
my_tensor = jnp.array([[1.0, 2.0], [3.0, 4.0]])
my_variable = jv.Variable(my_tensor)

# Variables can be all kinds of types, just like tensors
bool_variable = jv.Variable([False, False, False, True])
complex_variable = jv.Variable([5 + 4j, 6 + 1j])
print("bool:", bool_variable.dtype, " complex:", complex_variable.dtype)

print("Shape: ", my_variable.shape)
print("DType: ", my_variable.dtype)
print("As NumPy: ", my_variable.numpy())

# -- Most tensor operations work on variables; they cannot be reshaped ------------------
print("A variable:", my_variable)
print("\nViewed as a tensor:", jnp.asarray(my_variable))
# jax.numpy functions take a Variable too; type checkers want its .value (their
# ArrayLike type does not list Variable), so typed code passes that.
print("\nIndex of highest value:", jnp.argmax(my_variable.value, axis=0))
# This creates a new array; it does not reshape the variable.
print("\nCopying and reshaping: ", jnp.reshape(my_variable.value, (1, 4)))

# -- Assign keeps dtype and shape ----------------------------------------------------------
a = jv.Variable([2.0, 3.0])
# This will keep the same dtype, float32
a.assign([1, 2])
print("\nafter assign([1, 2]):", a.numpy(), a.dtype)
# Not allowed as it resizes the variable:
try:
    a.assign([1.0, 2.0, 3.0])
except Exception as e:
    print(f"{type(e).__name__}: {e}")

# -- Creating a variable from another copies it -------------------------------------------
a = jv.Variable([2.0, 3.0])
# Create b based on the value of a
b = jv.Variable(a)
a.assign([5, 6])

# a and b are different
print(a.numpy())
print(b.numpy())

# There are other versions of assign
print(a.assign_add([2, 3]).numpy())  # [7. 9.]
print(a.assign_sub([7, 9]).numpy())  # [0. 0.]

# -- Lifecycles, naming, and watching --------------------------------------------------------
# Create a and b; they will have the same name but will be backed by different arrays.
a = jv.Variable(my_tensor, name="Mark")
# A new variable with the same name, but different value
# Note that the scalar add is broadcast
b = jv.Variable(my_tensor + 1, name="Mark")

# These are elementwise-unequal, despite having the same name
print(a == b)

# Turn off gradients for a variable that does not need them, such as a step counter.
step_counter = jv.Variable(1, trainable=False)
print("step_counter:", step_counter)
