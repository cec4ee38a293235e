"""jaxvars: stateful, TensorFlow-style variables for JAX."""

from . import random as random
from ._checkpoint import restore as restore
from ._checkpoint import save as save
from ._config import config as config
from ._errors import JaxvarsError as JaxvarsError
from ._jit import jit as jit
from ._lifted import cond as cond
from ._lifted import eval_shape as eval_shape
from ._lifted import remat as remat
from ._lifted import scan as scan
from ._lifted import switch as switch
from ._lifted import while_loop as while_loop
from ._module import Module as Module
from ._naming import name_scope as name_scope
from ._optimizer import Optimizer as Optimizer
from ._placement import device as device
from ._placement import set_log_device_placement as set_log_device_placement
from ._placement import sharding_rules as sharding_rules
from ._scope import AUTO_REUSE as AUTO_REUSE
from ._scope import VariableScope as VariableScope
from ._scope import get_variable as get_variable
from ._scope import make_template as make_template
from ._scope import variable_scope as variable_scope
from ._store import Store as Store
from ._store import default_store as default_store
from ._store import reset_default_store as reset_default_store
from ._transforms import fori_loop as fori_loop
from ._transforms import grad as grad
from ._transforms import value_and_grad as value_and_grad
from ._variable import Variable as Variable
from ._vmap import vmap as vmap

__version__ = "0.1.0.dev0"

__all__ = [
    "AUTO_REUSE",
    "JaxvarsError",
    "Module",
    "Optimizer",
    "Store",
    "Variable",
    "VariableScope",
    "cond",
    "config",
    "default_store",
    "device",
    "eval_shape",
    "fori_loop",
    "get_variable",
    "grad",
    "jit",
    "make_template",
    "name_scope",
    "random",
    "remat",
    "reset_default_store",
    "restore",
    "save",
    "scan",
    "set_log_device_placement",
    "sharding_rules",
    "switch",
    "value_and_grad",
    "variable_scope",
    "vmap",
    "while_loop",
]

# Public names report the package, not the private module that defines them.
for _public in (
    JaxvarsError,
    Module,
    Optimizer,
    Store,
    Variable,
    VariableScope,
    cond,
    default_store,
    device,
    eval_shape,
    fori_loop,
    get_variable,
    grad,
    jit,
    make_template,
    name_scope,
    remat,
    reset_default_store,
    restore,
    save,
    scan,
    set_log_device_placement,
    sharding_rules,
    switch,
    value_and_grad,
    variable_scope,
    vmap,
    while_loop,
):
    _public.__module__ = __name__
del _public
