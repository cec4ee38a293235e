"""Process-wide settings, read through ``jv.config``."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Config:
    """jaxvars' global settings; change them as attributes of ``jv.config``.

    Attributes:
        soft_device_placement: When True (the default, as in TensorFlow), asking
            for a device that does not exist places on JAX's default device and
            logs a WARNING on the ``"jaxvars"`` logger; when False it raises
            ``ValueError`` naming the available devices.

    Example:
        >>> import jaxvars as jv
        >>> jv.config.soft_device_placement
        True
    """

    soft_device_placement: bool = True


config = Config()
