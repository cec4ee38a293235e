"""jaxvars: stateful, TensorFlow-style variables for JAX."""

from . import random as random
from ._checkpoint import list_variables as list_variables
from ._checkpoint import load_variable as load_variable
from ._checkpoint import save as save
from ._checkpoint_manager import CheckpointManager as CheckpointManager
from ._collections import add_to_collection as add_to_collection
from ._collections import get_collection as get_collection
from ._collections import global_variables as global_variables
from ._collections import local_variables as local_variables
from ._collections import trainable_variables as trainable_variables
from ._config import config as config
from ._deferred import RestoreStatus as RestoreStatus
from ._ema import ExponentialMovingAverage as ExponentialMovingAverage
from ._errors import JaxvarsError as JaxvarsError
from ._export import export as export
from ._export import load_exported as load_exported
from ._functional import assign_state as assign_state
from ._functional import functional as functional
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
from ._regularization import regularization_loss as regularization_loss
from ._regularization import regularization_losses as regularization_losses
from ._restore import init_from_checkpoint as init_from_checkpoint
from ._restore import restore as restore
from ._scope import AUTO_REUSE as AUTO_REUSE
from ._scope import VariableScope as VariableScope
from ._scope import get_variable as get_variable
from ._scope import get_variable_scope as get_variable_scope
from ._scope import variable_scope as variable_scope
from ._store import GraphKeys as GraphKeys
from ._store import Store as Store
from ._store import default_store as default_store
from ._store import reset_default_store as reset_default_store
from ._template import Template as Template
from ._template import make_template as make_template
from ._tf_checkpoint import latest_checkpoint as latest_checkpoint
from ._transforms import fori_loop as fori_loop
from ._transforms import grad as grad
from ._transforms import value_and_grad as value_and_grad
from ._variable import Variable as Variable
from ._vmap import vmap as vmap

__version__ = "0.1.0.dev0"

__all__ = [
    "AUTO_REUSE",
    "CheckpointManager",
    "ExponentialMovingAverage",
    "GraphKeys",
    "JaxvarsError",
    "Module",
    "Optimizer",
    "RestoreStatus",
    "Store",
    "Template",
    "Variable",
    "VariableScope",
    "add_to_collection",
    "assign_state",
    "cond",
    "config",
    "default_store",
    "device",
    "eval_shape",
    "export",
    "fori_loop",
    "functional",
    "get_collection",
    "get_variable",
    "get_variable_scope",
    "global_variables",
    "grad",
    "init_from_checkpoint",
    "jit",
    "latest_checkpoint",
    "list_variables",
    "load_exported",
    "load_variable",
    "local_variables",
    "make_template",
    "name_scope",
    "random",
    "regularization_loss",
    "regularization_losses",
    "remat",
    "reset_default_store",
    "restore",
    "save",
    "scan",
    "set_log_device_placement",
    "sharding_rules",
    "switch",
    "trainable_variables",
    "value_and_grad",
    "variable_scope",
    "vmap",
    "while_loop",
]

# Public names report the package, not the private module that defines them.
for _public in (
    CheckpointManager,
    ExponentialMovingAverage,
    GraphKeys,
    JaxvarsError,
    Module,
    Optimizer,
    RestoreStatus,
    Store,
    Template,
    Variable,
    VariableScope,
    add_to_collection,
    assign_state,
    cond,
    default_store,
    device,
    eval_shape,
    export,
    fori_loop,
    functional,
    get_collection,
    get_variable,
    get_variable_scope,
    global_variables,
    grad,
    init_from_checkpoint,
    jit,
    latest_checkpoint,
    list_variables,
    load_exported,
    load_variable,
    local_variables,
    make_template,
    name_scope,
    regularization_loss,
    regularization_losses,
    remat,
    reset_default_store,
    restore,
    save,
    scan,
    set_log_device_placement,
    sharding_rules,
    switch,
    trainable_variables,
    value_and_grad,
    variable_scope,
    vmap,
    while_loop,
):
    _public.__module__ = __name__
del _public
