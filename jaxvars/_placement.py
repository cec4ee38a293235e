"""Where arrays live: device specs (TF-style strings or jax.Device) and shardings."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import jax
from jax.sharding import Sharding, SingleDeviceSharding

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


def describe(device: Device) -> str:
    """A short device label such as ``cpu:0``."""
    return f"{device.platform}:{device.id}"
