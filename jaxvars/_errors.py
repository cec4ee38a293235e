"""The error types of jaxvars and the long messages they carry."""

import os

from ._jax_private import api_boundary, include_filename, register_exclusion

# Every module of the package imports this one: JAX's traceback filtering then
# hides jaxvars' frames, as it hides its own, so users' tracebacks end in
# their own code.
register_exclusion(os.path.dirname(os.path.abspath(__file__)))

# Filtering happens where an exception leaves a function wrapped by this: every
# public entry point (jv.jit functions, transforms, Variable methods) is one.
# Measured: one Python frame per call, nothing more.
boundary = api_boundary


def internal(filename: str) -> bool:
    """Whether a frame of ``filename`` is jaxvars' or JAX's own (hidden from users)."""
    return not include_filename(filename)


class JaxvarsError(Exception):
    """Base class of every error jaxvars raises on purpose.

    Each concrete error also derives from the built-in type the contract
    names (``ValueError`` or ``TypeError``), so ``except ValueError`` works
    as it would with TensorFlow.

    Example:
        >>> import jaxvars as jv
        >>> v = jv.Variable([1.0, 2.0])
        >>> try:
        ...     v.assign([1.0, 2.0, 3.0])
        ... except jv.JaxvarsError as e:
        ...     print(type(e).__mro__[2].__name__)
        ValueError
    """


class JaxvarsValueError(JaxvarsError, ValueError):
    """A value of the right type but the wrong shape, name or content."""


class JaxvarsTypeError(JaxvarsError, TypeError):
    """A value of the wrong type or dtype."""


SHAPE_MISMATCH = (
    "Cannot {op} to variable '{name}': the variable's shape {shape} and the value's "
    "shape {value_shape} are incompatible. A variable's shape never changes; create a "
    "new jv.Variable for a value of another shape."
)
DTYPE_MISMATCH = (
    "Cannot {op} a value of dtype {src} to variable '{name}' of dtype {dst}: the cast "
    "is not 'same_kind' (float->int, complex->real and anything->bool are refused). "
    "Cast explicitly, e.g. value.astype({dst}), if the loss of information is intended."
)
TRACER_ASSIGN = (
    "Cannot {op} to variable '{name}' here: the value is a JAX tracer from a transform "
    "that jaxvars does not control (a raw jax.jit, jax.vmap, jax.grad or jax.lax loop). "
    "The assignment would be lost or leak the tracer. Use jv.jit instead of jax.jit, "
    "and jv.fori_loop instead of jax.lax loops, so the assignment is carried out."
)
CONCRETE_ASSIGN = (
    "Cannot {op} to variable '{name}' here: the code runs inside a transform that jaxvars "
    "does not control (a raw jax.jit, jax.vmap, jax.grad or jax.lax loop), which runs it "
    "once while tracing and never again, so the assignment would silently be lost on "
    "later calls. Use jv.jit instead of jax.jit, and jv.fori_loop instead of jax.lax loops."
)


class JaxvarsIndexError(JaxvarsValueError, IndexError):
    """An index out of range; also an ``IndexError``, as NumPy's ``AxisError`` is."""


class Unreadable(Exception):
    """A problem reading one checkpoint (a damaged file, a corrupted value), as one
    line; whoever catches it names the file."""
