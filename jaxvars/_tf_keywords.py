"""TF keywords jaxvars does not take, each refused with what to use instead."""

from __future__ import annotations

from typing import Any

from ._errors import JaxvarsTypeError

_INSTEAD = {
    "partitioner": (
        "jaxvars does not split a variable into pieces; give it a sharding= (a "
        "jax.sharding.NamedSharding) or use jv.sharding_rules to spread it over devices"
    ),
    "caching_device": (
        "JAX caches nothing per device; place the variable with jv.device(...) or "
        "device=, and arrays are copied where a computation needs them"
    ),
    "use_resource": "every jaxvars variable behaves like a TF resource variable; drop it",
    "validate_shape": "shapes are always checked and never change; drop it",
    "synchronization": (
        "there are no replicas to synchronise: one variable spans all devices through "
        "its sharding; drop it"
    ),
    "aggregation": (
        "there are no replicas to aggregate: one variable spans all devices through "
        "its sharding; drop it"
    ),
    "auxiliary_name_scope": "jaxvars scopes open no separate name scope; drop it",
    "use_locking": "assignments are atomic already; drop it",
    "partition_info": "jaxvars does not partition variables; drop it",
}


def refuse_tf_keywords(where: str, keywords: dict[str, Any]) -> None:
    """Raise TypeError for the first keyword in ``keywords`` (TF's or a typo)."""
    for keyword in keywords:
        advice = _INSTEAD.get(keyword)
        if advice is not None:
            raise JaxvarsTypeError(f"{where}() does not take {keyword}= (a TF keyword): {advice}.")
        raise JaxvarsTypeError(f"{where}() got an unexpected keyword argument {keyword!r}.")
