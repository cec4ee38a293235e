"""Where arrays live: device specs (TF-style strings or jax.Device) and shardings."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, Sharding, SingleDeviceSharding

from ._config import config
from ._errors import JaxvarsTypeError, JaxvarsValueError

if TYPE_CHECKING:
    Device = Any  # jaxlib ships no type stubs for its Device class
else:
    Device = jax.Device

logger = logging.getLogger("jaxvars")

# "cpu", "cpu:1", "GPU:0", "/gpu:0", "/device:GPU:0", "/job:w/replica:0/task:0/device:CPU:0"
_SPEC = re.compile(
    r"^(?:/job:[^/]+)?(?:/replica:\d+)?(?:/task:\d+)?/?(?:device:)?(?P<kind>[a-z]+)(?::(?P<index>\d+))?$",
    re.IGNORECASE,
)
SPEC_FORMS = (
    'a jax.Device, or a string such as "cpu", "cpu:0", "GPU:0" or "/device:GPU:0" '
    "(case-insensitive)"
)


def resolve_device(spec: Any) -> Device:
    """The ``jax.Device`` that ``spec`` names.

    A missing device falls back to JAX's default device with a WARNING record
    while ``jv.config.soft_device_placement`` is on, else raises.

    Raises:
        TypeError: ``spec`` is neither a string nor a ``jax.Device``.
        ValueError: a malformed string, or a missing device under hard placement.
    """
    if isinstance(spec, jax.Device):
        return spec
    if not isinstance(spec, str):
        raise JaxvarsTypeError(f"A device must be {SPEC_FORMS}; got {type(spec).__name__}.")
    match = _SPEC.match(spec.strip())
    if match is None:
        raise JaxvarsValueError(f"Malformed device spec {spec!r}: expected {SPEC_FORMS}.")
    kind, index = match["kind"].lower(), int(match["index"] or 0)
    try:
        candidates = jax.devices(kind)
    except RuntimeError:
        candidates = []
    if index < len(candidates):
        return candidates[index]
    available = ", ".join(f"{d.platform}:{d.id}" for d in jax.devices())
    if not config.soft_device_placement:
        raise JaxvarsValueError(
            f"Device {spec!r} does not exist; available devices: {available}. "
            "Set jv.config.soft_device_placement = True to fall back to the default device."
        )
    fallback = jax.devices()[0]
    logger.warning(
        "Device %r does not exist (available: %s); placing on %s instead (soft placement).",
        spec,
        available,
        describe(fallback),
    )
    return fallback


def resolve_sharding(device: Any, sharding: Any) -> Sharding | None:
    """The sharding a variable is committed to, or None for an uncommitted one."""
    if device is not None and sharding is not None:
        raise JaxvarsValueError("Pass either device= or sharding=, not both.")
    if sharding is not None:
        if not isinstance(sharding, Sharding):
            raise JaxvarsTypeError(
                f"sharding= must be a jax.sharding.Sharding, got {type(sharding).__name__}."
            )
        return sharding
    if device is not None:
        return SingleDeviceSharding(resolve_device(device))
    return None


def replicated_on(sharding: Sharding) -> Sharding:
    """A sharding holding a whole copy on each of ``sharding``'s devices."""
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec())
    devices = sorted(sharding.device_set, key=lambda d: d.id)
    if len(devices) == 1:
        return SingleDeviceSharding(devices[0])
    return NamedSharding(Mesh(np.array(devices), ("devices",)), PartitionSpec())


def describe(device: Device) -> str:
    """A short device label such as ``cpu:0``."""
    return f"{device.platform}:{device.id}"


# -- contexts: jv.device, jv.sharding_rules, placement logging -----------------------

_device: contextvars.ContextVar[Device | None] = contextvars.ContextVar(
    "jaxvars_device", default=None
)
_rules: contextvars.ContextVar[tuple[Mesh, list[tuple[re.Pattern[str], PartitionSpec]]] | None] = (
    contextvars.ContextVar("jaxvars_sharding_rules", default=None)
)
# Count of open jv.device contexts (in any thread) plus one while logging is on:
# variable expressions take the slow, placement-aware path only when it is not 0.
HOOKS = [0]
_LOG = [False]
_hooks_lock = threading.Lock()


def _hook(delta: int) -> None:
    with _hooks_lock:
        HOOKS[0] += delta


@contextlib.contextmanager
def device(spec: Any) -> Iterator[Device]:
    """Place variables created inside on ``spec``, and run variable expressions there.

    Like ``tf.device``: variables created inside are committed to the device;
    expressions on variables (``a * b``, ``v + x``) compute there, copying
    operands from other devices; other uncommitted computations default there
    (``jax.default_device``). A device that does not exist falls back to the
    default device with a WARNING while ``jv.config.soft_device_placement`` is
    on (the default), else raises ``ValueError``.

    Args:
        spec: A ``jax.Device`` or a string: ``"cpu"``, ``"cpu:1"``, ``"GPU:0"``,
            ``"/device:GPU:0"`` (case-insensitive).

    Yields:
        The ``jax.Device`` used.

    Example:
        >>> import jaxvars as jv
        >>> with jv.device("cpu:0"):
        ...     v = jv.Variable([1.0, 2.0])
        >>> v.device.platform, v.value.committed
        ('cpu', True)
    """
    resolved = resolve_device(spec)
    token = _device.set(resolved)
    _hook(1)
    try:
        with jax.default_device(resolved):
            yield resolved
    finally:
        _hook(-1)
        _device.reset(token)


@contextlib.contextmanager
def sharding_rules(
    rules: Mapping[str, PartitionSpec] | Sequence[tuple[str, PartitionSpec]], mesh: Mesh
) -> Iterator[None]:
    """Shard the variables created inside by name, without touching model code.

    Each variable created inside (by ``jv.Variable``, ``get_variable``, a
    Module or an Optimizer) with no ``device=``/``sharding=`` of its own gets
    ``NamedSharding(mesh, spec)`` for the first rule whose regular expression
    matches (``re.search``) its full name, and is replicated over ``mesh`` when
    none matches.

    Args:
        rules: ``{pattern: PartitionSpec}`` or a sequence of pairs, in order.
        mesh: The ``jax.sharding.Mesh`` the specs refer to.

    Example:
        >>> import jax, numpy as np
        >>> from jax.sharding import Mesh, PartitionSpec as P
        >>> import jaxvars as jv
        >>> mesh = Mesh(np.array(jax.devices()[:2]), ("model",))
        >>> with jv.sharding_rules({r"/w$": P(None, "model")}, mesh):
        ...     w = jv.Variable(np.ones((4, 8), np.float32), name="dense/w")
        ...     b = jv.Variable(np.zeros(8, np.float32), name="dense/b")
        >>> w.sharding.spec, b.sharding.spec
        (P(None, 'model'), P())
    """
    if not isinstance(mesh, Mesh):
        raise JaxvarsTypeError(
            f"sharding_rules needs a jax.sharding.Mesh, got {type(mesh).__name__}."
        )
    pairs = list(rules.items()) if isinstance(rules, Mapping) else list(rules)
    compiled = []
    for pattern, spec in pairs:
        if not isinstance(spec, PartitionSpec):
            raise JaxvarsTypeError(
                f"sharding_rules: the rule for {pattern!r} must map to a PartitionSpec, "
                f"got {type(spec).__name__}."
            )
        try:
            compiled.append((re.compile(pattern), spec))
        except re.error as e:
            raise JaxvarsValueError(f"sharding_rules: bad pattern {pattern!r}: {e}") from None
    token = _rules.set((mesh, compiled))
    try:
        yield
    finally:
        _rules.reset(token)


def default_sharding(name: str) -> Sharding | None:
    """The placement a new variable named ``name`` gets from the open contexts."""
    active = _device.get()
    if active is not None:
        return SingleDeviceSharding(active)
    rules = _rules.get()
    if rules is None:
        return None
    mesh, compiled = rules
    spec = next((spec for pattern, spec in compiled if pattern.search(name)), PartitionSpec())
    return NamedSharding(mesh, spec)


def set_log_device_placement(enabled: bool) -> None:
    """Log where each variable is created and each variable expression runs.

    Records go to the standard ``logging`` logger ``"jaxvars"`` at INFO level
    (``logging.basicConfig(level=logging.INFO)`` shows them), like
    ``tf.debugging.set_log_device_placement``.

    Example:
        >>> import jaxvars as jv
        >>> jv.set_log_device_placement(True)
        >>> jv.set_log_device_placement(False)
    """
    enabled = bool(enabled)
    if enabled != _LOG[0]:
        _LOG[0] = enabled
        _hook(1 if enabled else -1)


def log_creation(name: str, value: jax.Array) -> None:
    if _LOG[0]:
        logger.info("Variable '%s' created on %s", name, placement_of(value))


def expression(op: Callable[..., Any], operands: list[Any], names: list[str]) -> Any:
    """Run a variable expression where jv.device says, logging it if asked."""
    target = _device.get()
    if target is not None:
        operands = [
            jax.device_put(x, target) if isinstance(x, jax.Array) and x.devices() != {target} else x
            for x in operands
        ]
    result = op(*operands)
    if _LOG[0]:
        where = placement_of(result) if isinstance(result, jax.Array) else "host"
        logger.info("%s(%s) runs on %s", _op_name(op), ", ".join(names), where)
    return result


def placement_of(value: jax.Array) -> str:
    if isinstance(value, jax.ShapeDtypeStruct):
        return describe_array(value)
    devices = value.devices()
    if len(devices) == 1:
        return describe(next(iter(devices)))
    return f"{len(devices)} devices ({value.sharding})"


def _op_name(op: Callable[..., Any]) -> str:
    return getattr(op, "__name__", repr(op)).strip("_")


def uncommitted(value: jax.Array) -> jax.Array:
    """``value`` as an uncommitted array on the default device."""
    # JAX has no public way to drop an array's commitment in place; a host round
    # trip gives an uncommitted array on the default device (rare path: only when
    # a committed array is assigned to an uncommitted variable).
    return jnp.asarray(np.asarray(value))


def place(value: jax.Array, sharding: Sharding, name: str, copy: bool = False) -> jax.Array:
    """``value`` laid out with ``sharding`` (a copy if ``copy``), for variable ``name``."""
    if not copy and value.committed and value.sharding.is_equivalent_to(sharding, value.ndim):
        return value  # already laid out so (a sharded initial value): no gather
    # Spanning other processes' devices: each process puts its own shards from
    # the same host data (multi-controller JAX).
    source = value if sharding.is_fully_addressable else np.asarray(value)
    try:
        return jax.device_put(source, sharding, may_alias=False if copy else None)
    except ValueError as e:
        raise JaxvarsValueError(
            f"Variable '{name}' of shape {tuple(value.shape)} cannot be placed with {sharding}: {e}"
        ) from None


def describe_array(value: jax.Array) -> str:
    """``device=cpu:0 (uncommitted)``, or ``sharding=...`` for several devices."""
    if isinstance(value, jax.ShapeDtypeStruct):
        return "abstract" if value.sharding is None else f"abstract, sharding={value.sharding}"
    devices = value.devices()
    if len(devices) != 1:
        return f"sharding={value.sharding}"
    committed = "" if value.committed else " (uncommitted)"
    return f"device={describe(next(iter(devices)))}{committed}"
