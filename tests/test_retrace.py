"""Retraces explained (jv.jit(explain_retraces=True), jax_explain_cache_misses) and cache_info."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxvars as jv


class Scaled(jv.Module):
    def __init__(self):
        super().__init__()
        self.w = jv.Variable(jnp.ones(4), name="w")
        self.training = True

    def __call__(self, x):
        return x * self.w if self.training else x


@pytest.fixture
def warnings(caplog):
    caplog.set_level(logging.WARNING, logger="jaxvars")

    def messages():
        found = [r.getMessage() for r in caplog.records if r.name == "jaxvars"]
        caplog.clear()
        return found

    return messages


def explained(fn, **kwargs):
    return jv.jit(fn, explain_retraces=True, **kwargs)


def only(messages):
    assert len(messages) == 1, messages
    return messages[0]


def test_the_first_trace_and_cached_calls_log_nothing(warnings):
    step = explained(lambda m, x: m(x))
    model = Scaled()
    step(model, jnp.ones(4))
    step(model, jnp.zeros(4))
    assert warnings() == []


def test_a_new_shape_names_the_argument_the_function_its_line_and_the_call(warnings):
    def step(model, x):
        return model(x)

    compiled, model = explained(step), Scaled()
    compiled(model, jnp.ones(4))
    compiled(model, jnp.ones(4))
    compiled(model, jnp.ones((2, 4)))
    message = only(warnings())
    line = step.__code__.co_firstlineno
    assert message.startswith(f"jv.jit(step) ({__file__}:{line}) traced again at call 3: ")
    assert message.endswith("argument x: float32[4] -> float32[2,4]")


def test_a_new_dtype(warnings):
    compiled, model = explained(lambda model, x: model(x)), Scaled()
    compiled(model, jnp.ones(4))
    compiled(model, jnp.ones(4, jnp.int32))
    assert only(warnings()).endswith("argument x: float32[4] -> int32[4]")


def test_a_weak_type(warnings):
    compiled, model = explained(lambda model, x: model(x)), Scaled()
    compiled(model, jnp.float32(2.0))
    compiled(model, 2.0)
    expected = "argument x: float32[] -> float32[] (weakly typed: a Python number)"
    assert only(warnings()).endswith(expected)


def test_a_new_sharding_names_the_mesh_axes():
    mesh = jax.make_mesh((8,), ("data",))
    compiled, model = explained(lambda model, x: model(x)), Scaled()
    x = jnp.ones((8, 4))
    records = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("jaxvars").addHandler(handler)
    try:
        compiled(model, x)
        compiled(model, jax.device_put(x, NamedSharding(mesh, P("data", None))))
    finally:
        logging.getLogger("jaxvars").removeHandler(handler)
    message = only([r.getMessage() for r in records])
    assert "argument x: float32[8,4] -> float32[8,4] sharded P('data', None)" in message
    assert "over mesh axes ('data',)" in message


def test_a_static_argument_value(warnings):
    compiled = explained(lambda model, x, power: model(x) ** power, static_argnums=2)
    model = Scaled()
    compiled(model, jnp.ones(4), 2)
    compiled(model, jnp.ones(4), 3)
    assert only(warnings()).endswith("static argument power: 2 -> 3")


def test_another_object(warnings):
    compiled = explained(lambda model, x: model(x))
    first, second = Scaled(), Scaled()
    compiled(first, jnp.ones(4))
    compiled(second, jnp.ones(4))
    message = only(warnings())
    assert f"argument model: Scaled object at {id(first):#x} -> " in message
    assert f"Scaled object at {id(second):#x}" in message
    assert f"variable '{second.w.name}' (" in message  # its variables are new to the code too


def test_a_module_attribute(warnings):
    compiled, model = explained(lambda model, x: model(x)), Scaled()
    compiled(model, jnp.ones(4))
    model.training = False
    compiled(model, jnp.ones(4))
    message = only(warnings())
    assert "attribute Scaled.training changed: True -> False" in message
    path = model.w.name.split("/")[0]
    assert f"variable '{model.w.name}' ({path}.w) freed or no longer used" in message


def test_a_trainable_setting(warnings):
    w = jv.Variable(jnp.ones(2), name="w_trainable")
    compiled = explained(lambda: jv.grad(lambda: jnp.sum(w * w), w)())
    compiled()
    w.trainable = False
    np.testing.assert_array_equal(compiled(), [0.0, 0.0])
    message = only(warnings())
    assert "variable 'w_trainable' trainable changed: True -> False" in message
    assert "variable 'w_trainable': float32[2], trainable=True -> float32[2], trainable=False" in (
        message
    )


def test_a_variable_created(warnings):
    class Growing(Scaled):
        def __call__(self, x):
            out = super().__call__(x)
            return out * self.extra if hasattr(self, "extra") else out

    compiled, model = explained(lambda model, x: model(x)), Growing()
    compiled(model, jnp.ones(4))
    model.extra = jv.Variable(2.0, name="extra")
    np.testing.assert_array_equal(compiled(model, jnp.ones(4)), [2.0] * 4)
    message = only(warnings())
    assert "attribute Growing.extra changed: unset -> " in message
    assert "variable 'extra' (" in message and "created or newly used: float32[]" in message


def test_a_store_cleared(warnings):
    def counter():
        v = jv.get_variable("retrace_counter", (), initializer=jnp.zeros)
        v.assign_add(1.0)
        return v * 1

    with jv.Store() as store:
        compiled = explained(counter)
        compiled()
        warnings()  # the first call's second trace (the variable it created) is no retrace
        store.clear()
        assert float(compiled()) == 1.0  # a new variable, from zero
    assert "the store was cleared" in warnings()[0]


def test_jax_explain_cache_misses_turns_it_on_too(warnings):
    compiled, model = jv.jit(lambda model, x: model(x)), Scaled()
    compiled(model, jnp.ones(4))
    compiled(model, jnp.ones((2, 4)))
    assert warnings() == []  # off by default
    with _config():
        compiled(model, jnp.ones((3, 4)))
    assert any("argument x: float32[2,4] -> float32[3,4]" in m for m in warnings())


class _config:
    def __enter__(self):
        jax.config.update("jax_explain_cache_misses", True)

    def __exit__(self, *exc):
        jax.config.update("jax_explain_cache_misses", False)


def test_cache_info_counts_traces_hits_misses_and_entries():
    model, runs = Scaled(), []

    @jv.jit
    def step(model, x):
        runs.append(1)
        return model(x)

    for x in (jnp.ones(4), jnp.ones(4), jnp.ones((2, 4)), jnp.ones((2, 4)), jnp.ones((2, 4))):
        step(model, x)
    info = step.cache_info()
    assert (info.traces, info.hits, info.misses, info.entries) == (2, 3, 2, 1)
    assert info.traces == len(runs)
    model.training = False  # evicts the entry
    assert step.cache_info().entries == 0


def test_an_argument_whose_repr_raises_does_not_break_the_call(warnings):
    class Opaque:
        def __repr__(self):
            raise RuntimeError("no repr")

        def __eq__(self, other):
            return isinstance(other, Opaque)

        def __hash__(self):
            return 1

    compiled = explained(lambda model, x, mode: model(x), static_argnums=2)
    model = Scaled()
    compiled(model, jnp.ones(4), Opaque())
    compiled(model, jnp.ones((2, 4)), Opaque())
    assert "argument x: float32[4] -> float32[2,4]" in only(warnings())


def test_the_newest_change_is_the_one_explained(warnings):
    class Rated(Scaled):
        def __init__(self):
            super().__init__()
            self.rate = 0.5

        def __call__(self, x):
            return super().__call__(x) * self.rate

    compiled, model = explained(lambda model, x: model(x)), Rated()
    compiled(model, jnp.ones(4))
    model.training = False
    compiled(model, jnp.ones(4))
    model.rate = 0.25
    compiled(model, jnp.ones(4))
    messages = warnings()
    assert (
        "Rated.training changed" in messages[0]
        and "Rated.rate changed: 0.5 -> 0.25" in (messages[1])
    )
