"""jv.restore and jv.init_from_checkpoint: a checkpoint's values into variables, all checked first.

Both make a plan, ``{target key: (file key, transform)}``, then check it
against the checkpoint in two rounds: what the index tells (missing and
unexpected keys, shapes, dtypes) before reading anything, then what only the
values tell (checksums, a transform's result, an int64 value too large for
the int32 variable JAX's 32-bit mode gives it). Only when both rounds find
nothing is any variable assigned.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from . import _deferred
from ._checkpoint import checkpoint_keys, listed, open_checkpoint, placed
from ._deferred import RestoreStatus
from ._errors import JaxvarsTypeError, JaxvarsValueError, boundary
from ._module import Module
from ._safetensors import problems_error, unsupported
from ._store import active_store
from ._variable import Variable

Plan = dict[str, tuple[str, Callable[[np.ndarray], Any] | None]]
# JAX's 32-bit mode narrows these; TF1's global_step and TF2's save_counter are int64.
_NARROWED = {np.dtype(np.int64): np.dtype(np.int32), np.dtype(np.uint64): np.dtype(np.uint32)}


@boundary
def restore(
    path: str | os.PathLike[str], target: Any, *, strict: bool = True, map: Any = None
) -> RestoreStatus:
    """Load ``target``'s variables from a checkpoint, after checking all of it.

    ``path`` is a ``jv.save`` file (or any safetensors file) or a TensorFlow
    checkpoint (a prefix such as ``model.ckpt-1000``, or a directory holding
    TF's ``checkpoint`` state file). Every key, shape and dtype must match;
    each problem (a missing key, a key the target lacks unless
    ``strict=False``, a damaged or corrupted value) is reported, all in one
    ``ValueError``, and then no variable has changed. Sharded variables keep
    their shardings. With JAX's 32-bit mode, int64 (uint64) values restore
    into int32 (uint32) variables when every value fits (TF1's
    ``global_step``).

    Args:
        path: The checkpoint.
        target: As for ``jv.save``: a Module, Store, Optimizer, dict or list.
        strict: Whether keys in the checkpoint that nothing restores are an
            error (never keys of a dtype jaxvars cannot represent).
        map: How target keys name the checkpoint's: a dict ``{target key: file
            key}`` (others keep their key); prefix renames ``{"new/": "old/"}``;
            or a callable ``target key -> file key``, None (not restored, keeps
            its value) or ``(file key, transform)``, the transform applied to the
            loaded array before the checks (a PyTorch ``(out, in)`` weight
            transposed into an ``(in, out)`` kernel).

    A Module with no variables yet (one that builds itself on its first call)
    is restored as TF2 and Keras do, deferred: every value is read and
    checked now and waits; each variable the module creates gets its value
    the moment it is assigned to the module (its shape and dtype checked
    then), so the first call already computes with the restored values.
    ``status.assert_consumed()`` then reports what was never applied.

    Returns:
        A ``RestoreStatus``: ``unconsumed`` (the keys still waiting) and
        ``assert_consumed()``.

    Raises:
        ValueError: listing every problem found; nothing was changed.

    Example:
        >>> import os, tempfile, numpy as np, jaxvars as jv
        >>> path = os.path.join(tempfile.mkdtemp(), "torch.safetensors")
        >>> jv.save(path, {"fc.weight": jv.Variable(np.ones((3, 2)))})  # (out, in)
        >>> kernel = jv.Variable(np.zeros((2, 3)), name="dense/kernel")  # (in, out)
        >>> transposed = lambda key: ("fc.weight", np.transpose)
        >>> _ = jv.restore(path, {"dense/kernel": kernel}, map=transposed)
        >>> kernel.shape, float(kernel.value.sum())
        ((2, 3), 6.0)
    """
    variables = checkpoint_keys(target)
    if isinstance(target, Module) and not variables:
        return _defer(path, target, strict=strict, map=map)
    skipped = _restore(path, variables, _plan(variables, map), strict=strict)
    return RestoreStatus(os.fsdecode(path), values=dict.fromkeys(skipped), strict=strict)


def _defer(path: Any, module: Module, *, strict: bool, map: Any) -> RestoreStatus:
    """Read and check every value now; keep them for the variables ``module`` creates."""
    if map is not None:
        raise JaxvarsTypeError(
            f"jv.restore: module '{module.name}' has no variables yet, so its values wait for "
            "them by path, and map= cannot apply; build it first (call it once), then restore "
            "with the map."
        )
    checkpoint = open_checkpoint(path, restoring=True)
    names = [
        name
        for name, found in checkpoint.listing().items()
        if found is not None and not isinstance(found[1], str)
    ]
    arrays, problems = checkpoint.read_many(names)
    problems = list(checkpoint.problems) + problems
    if problems:
        raise problems_error(path, problems, restoring=True)
    by_value: dict[Any, list[str]] = {}
    for name in names:
        by_value.setdefault(checkpoint.canonical(name), []).append(name)
    aliases = {name: by_value[checkpoint.canonical(name)] for name in names}
    status = RestoreStatus(
        os.fsdecode(path), module, arrays, checkpoint.find, aliases, strict=strict
    )
    _deferred.wait(module, status)
    return status


@boundary
def init_from_checkpoint(path: str | os.PathLike[str], assignment_map: Mapping[str, str]) -> None:
    """TF1's ``tf.compat.v1.train.init_from_checkpoint``: initialise variables of the
    active store from a checkpoint, by name.

    ``assignment_map`` maps checkpoint names to variable names (or Variables),
    each a name (``{"old/w": "new/w"}``) or a scope (``{"old_scope/":
    "new_scope/"}``: every variable under ``new_scope/`` from the same name
    under ``old_scope/``; ``"/"`` is the root, as in TF).
    Variables it does not reach keep their values; everything is checked
    before any variable changes, as for ``jv.restore``.

    Raises:
        ValueError: a name or scope that matches no variable, and every problem
            ``jv.restore`` would report; nothing was changed.

    Example:
        >>> import os, tempfile, jax.numpy as jnp, jaxvars as jv
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
        >>> jv.save(path, {"old/w": jv.Variable(jnp.ones(2))})
        >>> with jv.variable_scope("new"):
        ...     w = jv.get_variable("w", shape=(2,), initializer=jnp.zeros)
        >>> jv.init_from_checkpoint(path, {"old/": "new/"})
        >>> w.value.tolist()
        [1.0, 1.0]
    """
    store = dict(active_store().items())
    variables: dict[str, Variable] = {}
    plan: Plan = {}
    for old, new in assignment_map.items():
        if isinstance(new, Variable) and isinstance(old, str) and not old.endswith("/"):
            variables[new.name], plan[new.name] = new, (old, None)  # in the store or not
            continue
        if not isinstance(old, str) or not isinstance(new, str):
            raise JaxvarsTypeError(
                f"jv.init_from_checkpoint: assignment_map maps names to names or Variables; "
                f"got {old!r}: {new!r}."
            )
        if old.endswith("/") != new.endswith("/"):
            raise JaxvarsValueError(
                f"jv.init_from_checkpoint: {old!r} -> {new!r} maps a scope to a name; both "
                "end with '/' (scopes) or neither does (names)."
            )
        scope = "" if new == "/" else new
        names = [n for n in store if n.startswith(scope)] if new.endswith("/") else [new]
        names = [n for n in names if n in store]
        if not names:
            raise JaxvarsValueError(
                f"jv.init_from_checkpoint: {new!r} names no variable of the active store "
                f"(its variables: {listed(store)})."
            )
        for name in names:
            variables[name] = store[name]
            old_scope = "" if old == "/" else old
            plan[name] = (old_scope + name[len(scope) :] if new.endswith("/") else old, None)
    _restore(path, variables, plan, strict=False)


def _plan(variables: Mapping[str, Variable], map: Any) -> Plan:
    """Each target key's file key and transform, as ``map`` says (see ``jv.restore``)."""
    if map is None:
        return {key: (key, None) for key in variables}
    if callable(map):
        plan: Plan = {}
        for key in variables:
            found = map(key)
            if found is None:
                continue
            pair = found if isinstance(found, tuple) and len(found) == 2 else (found, None)
            name, transform = pair
            if not isinstance(name, str) or (transform is not None and not callable(transform)):
                raise JaxvarsTypeError(
                    f"jv.restore: map({key!r}) returned {found!r}; it returns a file key, None, "
                    "or a (file key, transform) pair."
                )
            plan[key] = (name, transform)
        return plan
    if not isinstance(map, Mapping):
        raise JaxvarsTypeError(f"jv.restore: map is a dict or a callable, got {type(map)}.")
    unknown = [k for k in map if not k.endswith("/") and k not in variables]
    if unknown:
        raise JaxvarsValueError(
            f"jv.restore: map names {unknown[0]!r}, which is not a key of the target (its keys: "
            f"{listed(variables)})."
        )
    prefixes = sorted((k for k in map if k.endswith("/")), key=len, reverse=True)
    for prefix in prefixes:
        if not isinstance(map[prefix], str) or not (map[prefix] == "" or map[prefix].endswith("/")):
            raise JaxvarsValueError(
                f"jv.restore: map renames the prefix {prefix!r} to {map[prefix]!r}; a prefix "
                "becomes another prefix, ending with '/' (or '' for none)."
            )
        if not any(key.startswith(prefix) for key in variables):
            raise JaxvarsValueError(
                f"jv.restore: map's prefix {prefix!r} starts no key of the target (its keys: "
                f"{listed(variables)})."
            )
    plan = {}
    for key in variables:
        if key in map:
            if map[key] is not None:
                plan[key] = (map[key], None)
            continue
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        plan[key] = (key if prefix is None else map[prefix] + key[len(prefix) :], None)
    return plan


def _restore(
    path: Any, variables: Mapping[str, Variable], plan: Plan, *, strict: bool
) -> list[str]:
    """Check, then assign; returns the file's keys nothing restored (``strict=False``)."""
    checkpoint = open_checkpoint(path, restoring=True)
    plan = {
        key: (checkpoint.find(name) or name, transform) for key, (name, transform) in plan.items()
    }
    listing = checkpoint.listing()
    problems = list(checkpoint.problems)
    for key, (name, transform) in plan.items():
        via = "" if name == key else f" (for {key!r})"
        if name not in listing:
            problems.append(f"missing key {name!r}{via}")
            continue
        found = listing[name]
        if found is None:
            continue  # malformed: among the checkpoint's problems
        if isinstance(found[1], str):
            problems.append(unsupported(name, found[1]))
        elif transform is None:
            problems += mismatch(f"{name!r}{via}", found, variables[key])
    # An alias and the key it stands for name one value: restoring either uses both.
    seen = {checkpoint.canonical(name) for name, _ in plan.values() if name in listing}
    unexpected = []
    for name, found in sorted(listing.items()):
        canonical = checkpoint.canonical(name)
        if canonical not in seen and found is not None and not isinstance(found[1], str):
            seen.add(canonical)
            unexpected.append(name)
    if strict:
        problems += [f"unexpected key {name!r}" for name in unexpected]
    if problems:
        raise problems_error(path, problems, restoring=True)
    arrays, problems = checkpoint.read_many(sorted({name for name, _ in plan.values()}))
    values = {}
    for key, (name, transform) in plan.items():
        if name not in arrays:
            continue
        array = arrays[name]
        if transform is not None:
            array = np.asarray(transform(array))
            what = f"{name!r} (for {key!r}, transformed)"
            found = mismatch(what, (array.shape, array.dtype), variables[key])
            if found:
                problems += found
                continue
        fitted = narrowed(name, array, variables[key])
        if isinstance(fitted, str):
            problems.append(fitted)
        else:
            values[key] = fitted
    if problems:
        raise problems_error(path, problems, restoring=True)
    for key, value in values.items():
        variable = variables[key]
        value = value if value.flags.c_contiguous else value.copy(order="C")  # keeps 0-d
        variable.assign(placed(value, variable))
    return unexpected


def mismatch(name: str, found: tuple[tuple[int, ...], Any], variable: Variable) -> list[str]:
    shape, dtype = tuple(found[0]), np.dtype(found[1])
    if shape != variable.shape:
        return [f"{name}: shape {shape} in the file, {variable.shape} in the variable"]
    if dtype != variable.dtype and not _narrows(dtype, variable.dtype):
        return [f"{name}: dtype {dtype} in the file, {variable.dtype} in the variable"]
    return []


def _narrows(stored: np.dtype, held: np.dtype) -> bool:
    """Whether a ``stored`` value may restore into a ``held`` variable: int64 into the
    int32 variable JAX's 32-bit mode gives a port (when the values fit)."""
    return _NARROWED.get(stored) == held and not jax.config.read("jax_enable_x64")


def narrowed(name: str, array: np.ndarray, variable: Variable) -> np.ndarray | str:
    """``array`` in the variable's dtype, or the problem if its values do not fit."""
    if array.dtype == variable.dtype:
        return array
    limits = np.iinfo(variable.dtype)
    if array.size and (array.min() < limits.min or array.max() > limits.max):
        return (
            f"{name!r}: its {array.dtype} values do not fit the {variable.dtype} variable "
            "(JAX's 32-bit mode; enable jax_enable_x64 for an int64 variable)"
        )
    return array.astype(variable.dtype)
