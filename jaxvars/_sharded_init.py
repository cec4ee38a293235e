"""Sharded initialisation: a callable initial value computed shard by shard.

Computing the whole value on one device and then splitting it needs the
whole array in one place: a model larger than a device (or than a host, over
several processes) could not be created. Instead the callable runs as one
compiled computation whose output has the variable's sharding, so each device
computes only its shard, and each process only its addressable shards. Random
draws come from the jaxvars stream, as an eager call's would, so the values
equal a single-device initialisation with the same seed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import Sharding

from . import _lift, _random
from ._errors import JaxvarsValueError
from ._operators import unwrap


def compute_sharded(fn: Callable[[], Any], sharding: Sharding, name: str) -> jax.Array:
    """``fn()`` computed directly into ``sharding``; advances the random stream as ``fn`` did."""
    stream = _random.key_variable()

    def pure(key: jax.Array) -> tuple[Any, Any]:
        out, frame = _lift.run_pure(fn, [stream], [key], records=True)
        others = [v.name for v in frame.assigned if v is not stream]
        if others:
            raise JaxvarsValueError(
                f"The initial value function of variable '{name}' assigns {others}; an "
                "initial value may draw random numbers but not change other variables."
            )
        return unwrap(out), frame.values[stream]

    value, key = jax.jit(pure, out_shardings=(sharding, None))(stream.value)
    stream.assign(key)
    return value
