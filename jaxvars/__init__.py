"""jaxvars: stateful, TensorFlow-style variables for JAX."""

from . import random as random
from ._config import config as config
from ._errors import JaxvarsError as JaxvarsError
from ._module import Module as Module
from ._naming import name_scope as name_scope
from ._scope import AUTO_REUSE as AUTO_REUSE
from ._scope import VariableScope as VariableScope
from ._scope import get_variable as get_variable
from ._scope import make_template as make_template
from ._scope import variable_scope as variable_scope
from ._store import Store as Store
from ._store import default_store as default_store
from ._store import reset_default_store as reset_default_store
from ._variable import Variable as Variable

__version__ = "0.1.0.dev0"

__all__ = [
    "AUTO_REUSE",
    "JaxvarsError",
    "Module",
    "Store",
    "Variable",
    "VariableScope",
    "config",
    "default_store",
    "get_variable",
    "make_template",
    "name_scope",
    "random",
    "reset_default_store",
    "variable_scope",
]

# Public names report the package, not the private module that defines them.
for _public in (
    JaxvarsError,
    Module,
    Store,
    Variable,
    VariableScope,
    default_store,
    get_variable,
    make_template,
    name_scope,
    reset_default_store,
    variable_scope,
):
    _public.__module__ = __name__
del _public
