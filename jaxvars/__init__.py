"""jaxvars: stateful, TensorFlow-style variables for JAX."""

from ._config import config as config
from ._errors import JaxvarsError as JaxvarsError
from ._variable import Variable as Variable

__version__ = "0.1.0.dev0"

__all__ = [
    "JaxvarsError",
    "Variable",
    "config",
]

# Public names report the package, not the private module that defines them.
for _public in (JaxvarsError, Variable):
    _public.__module__ = __name__
del _public
