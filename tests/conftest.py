"""Test set-up: 8 host CPU devices, so sharding and placement code runs on any machine."""

import os

# Must happen before jax is imported anywhere in the test process.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

assert len(jax.devices()) == 8, "conftest.py must run before anything imports jax"

import pytest  # noqa: E402

import jaxvars as jv  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_default_state():
    """Each test starts with an empty default store and a known random stream."""
    jv.reset_default_store()
    jv.random.set_seed(0)
    yield
