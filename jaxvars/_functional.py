"""jv.functional and jv.assign_state: a function of variables as a pure function of values.

``functional`` is the public face of the lifting path every transform uses
(``_lift.run_pure``): the function runs in a frame that owns the values given
in ``state``, so its reads see them and its assignments are recorded, never
applied. The result is a plain JAX function, for code written for pure JAX
(``jax.jit``, ``jax.vmap``, ``jax.grad``, ``jax.lax.scan``, ``shard_map``,
``jax.export``, optax utilities). Its keys are the ones checkpoints use
(``_checkpoint.checkpoint_keys``), so a state dict and a ``jv.save`` file of
the same target name the same variables alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from . import _lift, _trace
from ._checkpoint import checkpoint_keys, listed
from ._errors import JaxvarsTypeError, JaxvarsValueError, boundary
from ._module import Module
from ._store import mismatches
from ._variable import Variable

State = dict[str, Any]


@boundary
def functional(
    fn: Callable[..., Any], *example_args: Any, variables: Any = None, **example_kwargs: Any
) -> tuple[Callable[..., tuple[Any, State]], State]:
    """``fn`` as a pure function of its variables' values: ``(pure, state)``.

    ``pure(state, *args, **kwargs)`` returns ``(out, new_state)``: it reads
    the variables' values from ``state`` only and returns the values they hold
    at its end in ``new_state`` (same keys; the assigned ones changed). It never
    reads or changes a variable, so ``jax.jit``, ``jax.vmap``, ``jax.grad``,
    ``jax.lax.scan``, ``shard_map`` and ``jax.export`` all take it. Write a
    state back with ``jv.assign_state``. ``state`` holds the variables' own
    arrays (no copy): donating it to a ``jax.jit`` (``donate_argnums``) deletes
    them, so donate a copy (``jax.tree.map(jnp.copy, state)``) or only the
    states ``pure`` returns.

    Args:
        fn: A function of JAX values that reads and assigns variables (a
            Module is one). Its arguments are what ``pure`` takes after ``state``.
        *example_args: Arguments (arrays or ``jax.ShapeDtypeStruct``) to find
            the variables ``fn`` touches with, in one abstract pass as
            ``jv.jit`` does; none for a function of no arguments. A Module that
            builds itself on its first call (``jv.get_variable`` behind
            ``hasattr``) is built by this pass.
        variables: Which variables ``state`` holds. None: those ``fn`` touches
            on the example arguments, keyed by the paths ``jv.save(path, fn)``
            uses when ``fn`` is a Module and by their names otherwise. Or
            exactly these: a Module (keys: its paths), a Store or list (keys:
            full names) or a dict of variables (keys: its own).
        **example_kwargs: Keyword arguments for the abstract pass.

    Returns:
        ``(pure, state)``, where ``state`` holds the variables' current values.

    Raises:
        ValueError: ``fn`` creates variables (build the model first), or two
            variables it touches share a key. ``pure`` raises one when
            ``state``'s keys, shapes or dtypes differ from the variables', or
            when ``fn`` touches a variable ``state`` lacks.

    Example:
        >>> import jax, jax.numpy as jnp, jaxvars as jv
        >>> count = jv.Variable(0.0, name="count")
        >>> def tick(x):
        ...     count.assign_add(1.0)
        ...     return x * count
        >>> pure, state = jv.functional(tick, jnp.ones(2))
        >>> out, state = jax.jit(pure)(state, jnp.ones(2))
        >>> out, state = jax.jit(pure)(state, jnp.ones(2))
        >>> out.tolist(), float(state["count"]), float(count.value)
        ([2.0, 2.0], 2.0, 0.0)
        >>> jv.assign_state(state, [count])
        >>> float(count.value)
        2.0
    """
    pure, keyed = pure_form(fn, example_args, example_kwargs, variables)
    return pure, {key: v.value for key, v in keyed.items()}


def pure_form(
    fn: Callable[..., Any], args: Any, kwargs: Any, variables: Any
) -> tuple[Callable[..., tuple[Any, State]], dict[str, Variable]]:
    """``jv.functional``'s pure function, and its variables by key."""
    keyed = _touched(fn, args, kwargs) if variables is None else None
    if keyed is None:
        keyed = checkpoint_keys(variables)
    keys, targets = list(keyed), list(keyed.values())
    name = _fn_name(fn)

    def pure(state: Mapping[str, Any], *args: Any, **kwargs: Any) -> tuple[Any, State]:
        values = _values(name, state, keyed)
        out, frame = _lift.run_pure(fn, targets, values, args, kwargs, records=True)
        _refuse_outside(name, frame)
        ends = frame.values
        out = jax.tree_util.tree_map(
            lambda x: ends[x] if isinstance(x, Variable) else x,
            out,
            is_leaf=lambda x: isinstance(x, Variable),
        )
        return out, {key: ends[v] for key, v in zip(keys, targets, strict=True)}

    pure.__name__ = pure.__qualname__ = f"pure_{getattr(fn, '__name__', 'fn')}"
    return pure, keyed


@boundary
def assign_state(state: Mapping[str, Any], variables: Any) -> None:
    """Write ``state`` (``{key: value}``, as ``jv.functional`` gives) into ``variables``.

    Every key must name one of ``variables`` (keyed as ``jv.functional`` and
    ``jv.save`` key them), with its shape and dtype; all are checked before
    any is assigned. Variables ``state`` does not name keep their values.

    Args:
        state: The values, by key.
        variables: A Module (keys: its paths), a Store or list (keys: full
            names) or a dict of variables (keys: its own).

    Raises:
        ValueError: listing every key that names no variable, and every
            shape or dtype that differs; then no variable has changed.

    Example:
        >>> import jax.numpy as jnp, jaxvars as jv
        >>> w = jv.Variable(jnp.zeros(2), name="w")
        >>> jv.assign_state({"w": jnp.ones(2)}, [w])
        >>> w.value.tolist()
        [1.0, 1.0]
    """
    if not isinstance(state, Mapping):
        raise JaxvarsTypeError(f"jv.assign_state: state is a dict of values, got {type(state)}.")
    keyed = checkpoint_keys(variables)
    named = {key: keyed[key] for key in state if key in keyed}
    problems = _state_problems(named, state)
    if problems:
        raise JaxvarsValueError(
            "jv.assign_state: nothing was assigned, because:\n  "
            + "\n  ".join(problems)
            + f"\nThe variables' keys are: {listed(keyed)}."
        )
    with _trace.STATE_LOCK:
        for key, variable in named.items():
            variable.assign(state[key])


def _touched(fn: Any, args: Any, kwargs: Any) -> dict[str, Variable]:
    """The variables ``fn`` touches on the example arguments (one abstract pass), keyed."""
    found: list[_trace.Frame] = []

    def probe(*args: Any, **kwargs: Any) -> None:
        found.append(_lift.run_pure(fn, [], [], args, kwargs, records=True)[1])

    jax.eval_shape(probe, *args, **kwargs)
    frame = found[-1]
    if frame.created:
        raise JaxvarsValueError(
            f"jv.functional: {_fn_name(fn)} creates variable '{frame.created[0].name}' when "
            "called, and a pure function cannot create variables. Create it outside the "
            "function, or with jv.get_variable (a model building itself on its first call is "
            "built by jv.functional's pass)."
        )
    paths = {id(v): p for p, v in fn.named_variables().items()} if isinstance(fn, Module) else {}
    keyed: dict[str, Variable] = {}
    for variable in frame.discovered:
        key = paths.get(id(variable), variable.name)
        if key in keyed:
            raise JaxvarsValueError(
                f"jv.functional: two variables {_fn_name(fn)} touches share the key {key!r}. "
                "Pass variables= (a dict gives them keys of your own)."
            )
        keyed[key] = variable
    return keyed


def _values(name: str, state: Any, keyed: dict[str, Variable]) -> list[Any]:
    """``state``'s values in ``keyed``'s order, each checked against its variable."""
    if not isinstance(state, Mapping):
        raise JaxvarsTypeError(
            f"jv.functional({name}): pure's first argument is the state dict, got {type(state)}."
        )
    problems = _state_problems(keyed, state)
    if problems:
        raise JaxvarsValueError(
            f"jv.functional({name}): the state does not fit the function's variables:\n  "
            + "\n  ".join(problems)
        )
    return [state[key] for key in keyed]


def _state_problems(variables: Mapping[str, Variable], state: Mapping[str, Any]) -> list[str]:
    """Keys of ``state`` that name none of ``variables``, those it lacks, and every
    shape or dtype that differs (as a checkpoint's are checked)."""
    found = {key: (np.shape(value), _dtype(value)) for key, value in state.items()}
    return mismatches(variables, found, strict=True, source="state")


def _refuse_outside(name: str, frame: _trace.Frame) -> None:
    """A pure function touches only its state's variables, and creates none."""
    if frame.created:
        raise JaxvarsValueError(
            f"jv.functional({name}): the function created variable "
            f"'{frame.created[0].name}'; a pure function cannot. Build the model first."
        )
    if frame.discovered:
        missing = ", ".join(f"'{v.name}'" for v in frame.discovered)
        raise JaxvarsValueError(
            f"jv.functional({name}): the function touched {missing}, which the state does not "
            "hold. Pass variables= including it (or example arguments that reach it)."
        )


def _dtype(value: Any) -> np.dtype:
    dtype = getattr(value, "dtype", None)
    return np.dtype(dtype) if dtype is not None else np.asarray(value).dtype


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__qualname__", type(fn).__name__)
