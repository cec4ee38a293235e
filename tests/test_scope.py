"""variable_scope, get_variable, name_scope and make_template (API.md section 2)."""

import math
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvars as jv

THIS_FILE = str(pathlib.Path(__file__).resolve())


def test_scopes_nest_and_join_names_with_slashes():
    with jv.variable_scope("filter") as outer:
        with jv.variable_scope("conv1") as inner:
            w = jv.get_variable("weights", (5, 5, 32, 32))
    assert outer.name == "filter" and inner.name == "filter/conv1"
    assert w.name == "filter/conv1/weights"
    assert jv.default_store()["filter/conv1/weights"] is w


def test_get_variable_outside_any_scope_uses_the_bare_name():
    assert jv.get_variable("v", [1]).name == "v"


def test_reentering_by_name_or_by_object_shares():
    with jv.variable_scope("foo") as foo:
        v = jv.get_variable("v", [1])
    with jv.variable_scope("foo", reuse=True):
        assert jv.get_variable("v", [1]) is v
    with jv.variable_scope("elsewhere"):
        with jv.variable_scope(foo, reuse=True) as reopened:
            assert reopened.name == "foo"
            assert jv.get_variable("v") is v


def test_scope_object_keeps_its_absolute_name_for_new_variables():
    with jv.variable_scope("a") as a:
        pass
    with jv.variable_scope("b"), jv.variable_scope(a):
        assert jv.get_variable("w", [2]).name == "a/w"
        assert jv.Variable(0.0, name="x").name == "a/x"


def test_creating_an_existing_name_says_how_to_fix_and_where_it_was_made():
    with jv.variable_scope("conv1"):
        line = _line_of_next_call()
        jv.get_variable("weights", [2])
    with pytest.raises(ValueError) as info:
        with jv.variable_scope("conv1"):
            jv.get_variable("weights", [2])
    message = str(info.value)
    assert "Variable 'conv1/weights' already exists" in message
    assert "reuse=True or reuse=jv.AUTO_REUSE" in message
    assert f"Originally created at {THIS_FILE}:{line}" in message


def _line_of_next_call():
    import inspect

    return inspect.currentframe().f_back.f_lineno + 1


def test_getting_a_missing_name_with_reuse_true():
    with pytest.raises(ValueError, match="Variable 'scope/nope' does not exist"):
        with jv.variable_scope("scope", reuse=True):
            jv.get_variable("nope", [1])
    assert "scope/nope" not in jv.default_store()


def test_auto_reuse_gets_or_creates():
    with jv.variable_scope("s", reuse=jv.AUTO_REUSE):
        a = jv.get_variable("a", [3])
    with jv.variable_scope("s", reuse=jv.AUTO_REUSE):
        assert jv.get_variable("a", [3]) is a
        b = jv.get_variable("b", [3])
    assert list(jv.default_store()) == ["s/a", "s/b"] and b is not a
    assert repr(jv.AUTO_REUSE) == "jv.AUTO_REUSE"


@pytest.mark.parametrize("outer", [True, jv.AUTO_REUSE])
@pytest.mark.parametrize("inner", [None, False])
def test_reuse_is_inherited_and_false_cannot_switch_it_off(outer, inner):
    with jv.variable_scope("o"), jv.variable_scope("i"):
        existing = jv.get_variable("v", [1])
    with jv.variable_scope("o", reuse=outer), jv.variable_scope("i", reuse=inner) as scope:
        assert scope.reuse is outer
        assert jv.get_variable("v", [1]) is existing


def test_reuse_variables_switches_the_open_scope():
    with jv.variable_scope("foo") as scope:
        v = jv.get_variable("v", [1])
        scope.reuse_variables()
        assert jv.get_variable("v", [1]) is v
        with pytest.raises(ValueError, match="'foo/w' does not exist"):
            jv.get_variable("w", [1])


def test_invalid_reuse_value():
    with pytest.raises(ValueError, match="reuse must be None, False, True or jv.AUTO_REUSE"):
        with jv.variable_scope("x", reuse="yes"):
            pass


def test_sharing_with_another_shape_or_dtype_names_both():
    with jv.variable_scope("s"):
        jv.get_variable("v", (2, 3))
    with jv.variable_scope("s", reuse=True):
        with pytest.raises(
            ValueError, match=re.escape("'s/v', but specified shape (3, 2) and found shape (2, 3)")
        ):
            jv.get_variable("v", (3, 2))
        with pytest.raises(
            ValueError, match="'s/v', but specified dtype int32 and found dtype float32"
        ):
            jv.get_variable("v", (2, 3), dtype=jnp.int32)
        assert jv.get_variable("v").shape == (2, 3)


def test_initializer_and_dtype_defaults_are_inherited_and_overridable():
    with jv.variable_scope("a", initializer=jax.nn.initializers.ones, dtype=jnp.bfloat16):
        with jv.variable_scope("b"):
            inherited = jv.get_variable("x", [2])
        with jv.variable_scope("c", initializer=jax.nn.initializers.zeros):
            overridden = jv.get_variable("y", [2])
        explicit = jv.get_variable("z", [2], dtype=jnp.float32, initializer=2.0 * np.ones(2))
    assert inherited.dtype == jnp.bfloat16
    np.testing.assert_array_equal(inherited.numpy().astype(np.float32), [1.0, 1.0])
    np.testing.assert_array_equal(overridden.numpy().astype(np.float32), [0.0, 0.0])
    assert explicit.dtype == np.float32
    np.testing.assert_array_equal(explicit.numpy(), [2.0, 2.0])


def test_default_dtype_is_float32_and_constants_keep_their_dtype():
    assert jv.get_variable("f", [2]).dtype == np.float32
    assert jv.get_variable("i", initializer=[1, 2]).dtype == np.int32
    assert jv.get_variable("b", initializer=np.array([True])).dtype == np.bool_


@pytest.mark.parametrize("shape", [(), (7,), (3, 4), (5, 5, 32, 32)])
def test_default_initializer_is_glorot_uniform_with_tf_fan_rules(shape):
    v = jv.get_variable("w", shape)
    if len(shape) == 0:
        fan_in = fan_out = 1
    elif len(shape) == 1:
        fan_in = fan_out = shape[0]
    else:
        receptive = math.prod(shape[:-2])
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    limit = math.sqrt(6 / (fan_in + fan_out))
    values = v.numpy()
    assert np.all(np.abs(values) <= limit)
    if values.size > 100:
        assert values.std() == pytest.approx(limit / math.sqrt(3), rel=0.1)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_, jnp.uint8])
def test_default_initializer_is_zeros_for_other_dtypes(dtype):
    v = jv.get_variable("n", (2, 2), dtype=dtype)
    assert v.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(v.numpy(), np.zeros((2, 2), dtype))


def test_jax_nn_initializers_get_keys_from_the_random_stream():
    init = jax.nn.initializers.normal(1.0)
    jv.random.set_seed(7)
    with jv.Store():
        first = jv.get_variable("w", (4, 4), initializer=init).numpy()
        second = jv.get_variable("u", (4, 4), initializer=init).numpy()
    jv.random.set_seed(7)
    with jv.Store():
        again = jv.get_variable("w", (4, 4), initializer=init).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)


def test_initializer_errors():
    with pytest.raises(ValueError, match="get_variable\\('f'\\): shape is required"):
        jv.get_variable("f", initializer=jax.nn.initializers.ones)
    with pytest.raises(ValueError, match=r"constant initializer has shape \(2,\) but shape \(3,\)"):
        jv.get_variable("c", (3,), initializer=[1.0, 2.0])
    with pytest.raises(TypeError, match="shape must be a sequence of ints"):
        jv.get_variable("s", shape=3)
    with pytest.raises(TypeError, match="float32 to variable 't' of dtype int32"):
        jv.get_variable("t", initializer=[1.5], dtype=jnp.int32)
    assert len(jv.default_store()) == 0


def test_name_scope_prefixes_variables_but_not_get_variable():
    with jv.variable_scope("vs"):
        with jv.name_scope("ns") as prefix:
            plain = jv.Variable(1.0, name="plain")
            shared = jv.get_variable("shared", [1])
    assert prefix == "vs/ns"
    assert plain.name == "vs/ns/plain"
    assert shared.name == "vs/shared"
    assert jv.Variable(1.0, name="top").name == "top"


def test_variable_scope_prefixes_plain_variables():
    with jv.variable_scope("a"), jv.variable_scope("b"):
        assert jv.Variable(0.0).name == "a/b/Variable"


@pytest.mark.parametrize("bad", ["", "/a", "a/"])
def test_bad_scope_names(bad):
    with pytest.raises(ValueError, match="Invalid variable scope name"):
        with jv.variable_scope(bad):
            pass


def test_make_template_creates_then_reuses():
    calls = []

    def scaled(x, factor):
        calls.append(1)
        return x * jv.get_variable("w", initializer=1.0) * factor

    template = jv.make_template("scaled", scaled, factor=3.0)
    assert float(template(2.0)) == 6.0
    jv.default_store()["scaled/w"].assign(2.0)
    assert float(template(2.0)) == 12.0
    assert list(jv.default_store()) == ["scaled/w"] and len(calls) == 2


def test_templates_with_the_same_name_get_numbered_scopes_when_made():
    def body():
        return jv.get_variable("v", initializer=0.0)

    first = jv.make_template("t", body)
    second = jv.make_template("t", body)
    assert second().name == "t_1/v"  # numbered at creation, not first call
    assert first().name == "t/v"
    assert first() is first() and second() is not first()


def test_template_scope_is_taken_relative_to_where_it_is_made():
    with jv.variable_scope("outer"):
        template = jv.make_template("inner", lambda: jv.get_variable("v", initializer=0.0))
    with jv.variable_scope("somewhere"):
        assert template().name == "outer/inner/v"


def test_a_failed_first_call_leaves_the_template_creating():
    def body(fail):
        v = jv.get_variable("v", initializer=0.0)
        if fail:
            raise RuntimeError("boom")
        return v

    template = jv.make_template("flaky", body)
    with pytest.raises(RuntimeError):
        template(True)
    jv.default_store().clear()
    assert template(False).name == "flaky/v"


def test_open_scopes_and_stores_belong_to_their_thread():
    import threading

    store = jv.Store()
    seen = {}

    def worker():
        seen["name"] = jv.get_variable("v", [1]).name
        seen["in default store"] = "v" in jv.default_store()

    with store, jv.variable_scope("main"):
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    assert seen == {"name": "v", "in default store": True}
    assert len(store) == 0


@pytest.mark.parametrize("shape", [(2.5,), ("2",), (True,), "2", 2.0], ids=repr)
def test_get_variable_refuses_shapes_that_are_not_ints(shape):
    with pytest.raises(TypeError, match="shape must be a sequence of ints"):
        jv.get_variable("v", shape)
    assert "v" not in jv.default_store()


def test_get_variable_accepts_numpy_integer_dimensions():
    v = jv.get_variable("v", (np.int64(2), np.int32(3)))
    assert v.shape == (2, 3)


def test_an_initializer_returning_another_shape_is_refused():
    with pytest.raises(ValueError, match="'w'.*returned a value of shape \\(3,\\).*\\(2,\\)"):
        jv.get_variable("w", (2,), initializer=lambda key, shape, dtype: jnp.zeros(3, dtype))
    assert "w" not in jv.default_store()


def test_in_a_notebook_already_exists_names_the_cell_and_the_fix(monkeypatch):
    """IPython compiles each cell to a temporary file and remembers its number."""
    import sys
    import types

    cell_file = "/tmp/ipykernel_1234/2894619.py"
    shell = types.SimpleNamespace(compile=types.SimpleNamespace(_filename_map={cell_file: 3}))
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    cell = compile('\n\nw = jv.get_variable("w", [2])\n', cell_file, "exec")
    exec(cell, {"jv": jv})
    with pytest.raises(ValueError) as e:
        exec(cell, {"jv": jv})  # the cell re-run
    message = str(e.value)
    assert "Originally created at In [3], line 3." in message
    assert "jv.reset_default_store() at the top of the cell" in message
    jv.reset_default_store()  # the fix works
    exec(cell, {"jv": jv})


def test_outside_a_notebook_the_error_names_the_file_and_line():
    jv.get_variable("w", [2])
    with pytest.raises(ValueError) as e:
        jv.get_variable("w", [2])
    assert f"{__file__}:" in str(e.value) and "reset_default_store" not in str(e.value)
