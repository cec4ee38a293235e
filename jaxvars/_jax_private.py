"""The one module that imports JAX's private API (``jax._src``).

Everything else in jaxvars uses public JAX (``jax.Array``, ``jax.dtypes``,
``jax.core.Tracer``, ``jax.extend``) and takes from here the few names that
have no public form, so a JAX upgrade that moves one breaks this file only
(``tests/test_public_api.py`` checks that no other module reaches into
``jax._src``). Each name was checked against JAX 0.10.2 (jax and jaxlib 0.10.2,
within the ``jax>=0.10,<0.11`` pin of ``pyproject.toml``):

- ``jax._src.traceback_util``: ``register_exclusion``, ``api_boundary``,
  ``include_filename``, ``include_frame``. JAX's traceback filtering: frames of
  an excluded path are hidden where an exception leaves an ``api_boundary``,
  so users' tracebacks end in their own code. The public
  ``jax.extend.source_info_util.register_exclusion`` fills another list (the
  frames skipped when naming a user's line in jaxpr source info) and hides
  nothing from tracebacks; ``jax.dtypes`` and ``jax.extend`` have no other.
- ``jax._src.array.ArrayImpl``: the concrete class of every concrete JAX array
  (``jax.Array`` is an abstract base of it and of tracers).
- ``jax._src.dtypes.register_canonicalize_value_handler``: primitives bound
  directly (``jax.lax.add(v, 1)``, ``jax.lax.conv_general_dilated(x, v)``)
  canonicalise each operand by its exact type and refuse ``__jax_array__``;
  a handler for ``Variable`` hands them its current value. Public
  ``jax.dtypes`` has ``canonicalize_dtype`` (a dtype), not this (a value).
"""

# Why ArrayImpl and not isinstance(x, jax.Array): the per-step paths (a
# Variable's assign_add, jv.jit's call key, a frame's read) test every operand,
# and ``type(x) is ArrayImpl`` costs about 14 ns where ``isinstance(x,
# jax.Array)`` goes through the ABC's __instancecheck__, about 85-100 ns
# (measured on CPU with JAX 0.10.2). Imported, not made as
# ``type(jnp.zeros(()))``: an array at import time would start the backend.
from jax._src.array import ArrayImpl as ArrayImpl
from jax._src.dtypes import (
    register_canonicalize_value_handler as register_canonicalize_value_handler,
)
from jax._src.traceback_util import api_boundary as api_boundary
from jax._src.traceback_util import include_filename as include_filename
from jax._src.traceback_util import include_frame as include_frame
from jax._src.traceback_util import register_exclusion as register_exclusion
