"""Treescope renderings of Variables, Modules, Stores and Optimizers (extra ``treescope``).

``treescope.basic_interactive_setup()`` users see jaxvars objects with their
names, trainable settings (masks too) and shardings, as they see NNX's and
Equinox's. Treescope calls each class's ``__treescope_repr__``, which lands
here; without treescope installed nothing calls it, so the import is lazy.
"""

from __future__ import annotations

from typing import Any


def variable(variable: Any, path: str | None, subtree_renderer: Any) -> Any:
    """``Variable(name=..., value=<array>, trainable=..., sharding=...)``; an abstract
    one shows its shape and dtype instead of a value."""
    from treescope import repr_lib

    facts: dict[str, Any] = {"name": variable.name}
    if variable.is_abstract:
        facts.update(shape=variable.shape, dtype=variable.dtype)
    else:
        facts["value"] = variable.value
    facts.update(trainable=variable.trainable, sharding=variable.sharding)
    return repr_lib.render_object_constructor(type(variable), facts, path, subtree_renderer)


def module(module: Any, path: str | None, subtree_renderer: Any) -> Any:
    """The module's public attributes: its variables, submodules and settings."""
    from treescope import repr_lib

    attributes = {k: v for k, v in vars(module).items() if not k.startswith("_")}
    return repr_lib.render_object_constructor(type(module), attributes, path, subtree_renderer)


def store(store: Any, path: str | None, subtree_renderer: Any) -> Any:
    """A Store as the mapping it is: full names to variables."""
    from treescope import repr_lib

    return repr_lib.render_dictionary_wrapper(
        type(store), dict(store.items()), path, subtree_renderer
    )


def optimizer(optimizer: Any, path: str | None, subtree_renderer: Any) -> Any:
    """An Optimizer's iterations and state, by the variables it updates."""
    from treescope import repr_lib

    facts = {"iterations": optimizer.iterations, "state_variables": optimizer.state_variables}
    return repr_lib.render_object_constructor(type(optimizer), facts, path, subtree_renderer)
