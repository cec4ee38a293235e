"""The Variable cell: API.md section 1, bullet by bullet."""

import copy
import gc
import re
import threading
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxvars as jv

# -- construction and dtype inference ---------------------------------------------


@pytest.mark.parametrize(
    "initial, dtype",
    [
        (1.5, jnp.float32),
        (3, jnp.int32),
        (True, jnp.bool_),
        (5 + 4j, jnp.complex64),
        ([[1.0, 2.0], [3.0, 4.0]], jnp.float32),
        ([False, False, True], jnp.bool_),
        ([5 + 4j, 6 + 1j], jnp.complex64),
        (np.arange(3, dtype=np.float64), jnp.float32),
        (np.arange(3, dtype=np.int64), jnp.int32),
        (np.arange(3, dtype=np.uint8), jnp.uint8),
        (jnp.arange(3, dtype=jnp.bfloat16), jnp.bfloat16),
    ],
)
def test_dtype_is_inferred_like_jnp_asarray(initial, dtype):
    v = jv.Variable(initial)
    assert v.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(v.numpy(), np.asarray(initial).astype(dtype))


@pytest.mark.parametrize("initial", [1.0, 2, True, [1.0, 2.0]])
def test_values_are_stored_strongly_typed(initial):
    assert not jv.Variable(initial).value.weak_type


def test_dtype_argument_casts_under_the_assign_rule():
    assert jv.Variable([1, 2], dtype=jnp.float32).dtype == np.float32
    assert jv.Variable([1.0, 2.0], dtype=jnp.bfloat16).dtype == jnp.bfloat16
    with pytest.raises(TypeError, match="float32 to variable 'w' of dtype int32"):
        jv.Variable([1.5], dtype=jnp.int32, name="w")
    with pytest.raises(TypeError, match="'w'.*not a dtype"):
        jv.Variable([1.5], dtype="nonsense", name="w")


def test_64_bit_dtype_narrows_with_a_warning_like_jnp():
    with pytest.warns(UserWarning, match="float64 is not available.*float32"):
        v = jv.Variable([1.0], dtype=np.float64)
    assert v.dtype == np.float32


@pytest.mark.parametrize(
    "make, conversions",
    [
        (lambda: jv.Variable([1.0, 2.0]), 1),
        (lambda: jv.Variable(np.ones(3), dtype=jnp.bfloat16), 1),
        (lambda: jv.eval_shape(lambda: jv.Variable(jnp.zeros(3))), 1),
        # get_variable reads a constant once (its dtype and shape), the Variable once.
        (lambda: jv.get_variable("c", initializer=[1, 2]), 2),
        (lambda: jv.get_variable("d", [2], jnp.float32, initializer=[1, 2]), 2),
    ],
)
def test_creating_a_variable_converts_its_initial_value_once(make, conversions, monkeypatch):
    from jaxvars import _dtypes

    seen = []
    to_array = _dtypes.to_array
    monkeypatch.setattr(_dtypes, "to_array", lambda x, **kw: seen.append(x) or to_array(x, **kw))
    with jv.Store():
        make()
    assert len(seen) == conversions


def test_copy_from_another_variable_never_shares_state():
    a = jv.Variable([2.0, 3.0])
    b = jv.Variable(a)
    a.assign([5, 6])
    np.testing.assert_array_equal(a.numpy(), [5.0, 6.0])
    np.testing.assert_array_equal(b.numpy(), [2.0, 3.0])
    assert b.value.unsafe_buffer_pointer() != jv.Variable(b).value.unsafe_buffer_pointer()


def test_an_array_given_by_value_stays_valid_while_the_variable_trains():
    x = jnp.arange(3.0)
    v = jv.Variable(x)
    step = jv.jit(lambda: v.assign_add(1.0))
    for _ in range(3):
        step()
    np.testing.assert_array_equal(x, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(v.numpy(), [3.0, 4.0, 5.0])


def test_zero_argument_callable_initial_value():
    calls = []

    def init():
        calls.append(1)
        return [1.0, 2.0]

    v = jv.Variable(init)
    assert calls == [1]
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0])
    assert jv.Variable(lambda: jnp.ones((2, 3))).shape == (2, 3)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        ("abc", TypeError, "numeric array-like value.*got str"),
        (b"abc", TypeError, "got bytes"),
        (None, TypeError, "got NoneType"),
        ([[1, 2], [3]], ValueError, "rectangular"),
        (np.array([object(), 1]), TypeError, "dtype object"),
        (["a", "b"], TypeError, "dtype <U1"),
        ({"a": 1}, TypeError, "dtype object"),
    ],
)
def test_bad_initial_values_raise_clear_errors(bad, error, message):
    with pytest.raises(error, match=message):
        jv.Variable(bad, name="bad")


def test_name_must_be_a_string():
    with pytest.raises(TypeError, match="variable name must be a str, got int"):
        jv.Variable(1.0, name=3)
    with pytest.raises(ValueError, match="Invalid variable name ''"):
        jv.Variable(1.0, name="")


# -- names, attributes, repr, hashing ------------------------------------------------


def test_default_name_and_shared_names():
    assert jv.Variable(1.0).name == "Variable"
    a = jv.Variable([[1.0, 2.0]], name="Mark")
    b = jv.Variable([[2.0, 3.0]], name="Mark")
    assert a.name == b.name == "Mark"
    assert a is not b
    np.testing.assert_array_equal(a == b, [[False, False]])


def test_attributes():
    v = jv.Variable(np.zeros((2, 3), np.float32), name="x")
    assert v.shape == (2, 3) and isinstance(v.shape, tuple)
    assert v.dtype == np.dtype("float32") and isinstance(v.dtype, np.dtype)
    assert (v.ndim, v.size) == (2, 6)
    assert isinstance(v.value, jax.Array)
    assert v.read_value() is v.value
    assert v.device == jax.devices()[0]
    assert v.sharding == v.value.sharding


def test_numpy_is_a_writable_host_copy():
    v = jv.Variable([1.0, 2.0])
    host = v.numpy()
    assert isinstance(host, np.ndarray)
    host[0] = 100.0
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0])


def test_repr_shows_name_shape_dtype_trainable_placement_and_value():
    v = jv.Variable([[1.0, 2.0], [3.0, 4.0]], name="Mark", trainable=False)
    text = repr(v)
    for part in (
        "'Mark'",
        "shape=(2, 2)",
        "dtype=float32",
        "trainable=False",
        "cpu:0",
        "[[1., 2.]",
    ):
        assert part in text, (part, text)
    masked = jv.Variable([1.0, 2.0, 3.0], trainable=[True, False, True])
    assert "trainable=mask(2 of 3)" in repr(masked)


def test_hashable_by_identity():
    a, b = jv.Variable(1.0), jv.Variable(1.0)
    table = {a: "a", b: "b"}
    assert table[a] == "a" and table[b] == "b"
    assert len({a, b, a}) == 2
    assert hash(a) != hash(b)


# -- trainable ----------------------------------------------------------------------


def test_trainable_flag_is_settable():
    step_counter = jv.Variable(1, trainable=False)
    assert step_counter.trainable is False
    step_counter.trainable = True
    assert step_counter.trainable is True


def test_trainable_mask():
    v = jv.Variable(np.zeros((2, 2)))
    v.trainable = [[True, False], [False, True]]
    np.testing.assert_array_equal(v.trainable, [[True, False], [False, True]])
    v.trainable = np.ones((2, 2), bool)
    assert v.trainable.dtype == np.bool_


@pytest.mark.parametrize(
    "mask, message",
    [
        ([True, False], r"shape \(2, 2\); got an array of shape \(2,\) and dtype bool"),
        (np.ones((2, 2), np.float32), "got an array of shape \\(2, 2\\) and dtype float32"),
        (1, "got int"),
        ("yes", "got str"),
    ],
)
def test_bad_trainable_mask_raises_and_keeps_the_old_setting(mask, message):
    v = jv.Variable(np.zeros((2, 2)), name="m", trainable=[[True, False], [True, True]])
    before = v.trainable
    with pytest.raises(ValueError, match=f"trainable of variable 'm'.*{message}"):
        v.trainable = mask
    assert v.trainable is before
    with pytest.raises(ValueError, match="trainable of variable 'n'"):
        jv.Variable(np.zeros((2, 2)), name="n", trainable=mask)


# -- assign ---------------------------------------------------------------------------


def test_assign_family_returns_the_variable():
    a = jv.Variable([2.0, 3.0])
    assert a.assign([1, 2]) is a
    np.testing.assert_array_equal(a.assign_add([2, 3]).numpy(), [3.0, 5.0])
    np.testing.assert_array_equal(a.assign_sub([3, 5]).numpy(), [0.0, 0.0])
    assert a.dtype == np.float32


def test_assign_rebinds_the_cell_and_old_arrays_stay_valid():
    v = jv.Variable([1.0, 2.0])
    old = v.value
    v.assign([3.0, 4.0])
    np.testing.assert_array_equal(old, [1.0, 2.0])
    np.testing.assert_array_equal(v.value, [3.0, 4.0])


def test_assign_of_another_shape_names_the_variable_and_both_shapes():
    a = jv.Variable([2.0, 3.0], name="a")
    with pytest.raises(
        ValueError,
        match=re.escape("variable 'a': the variable's shape (2,) and the value's shape (3,)"),
    ):
        a.assign([1.0, 2.0, 3.0])


def test_assign_add_broadcasts_only_when_the_shape_is_kept():
    v = jv.Variable(np.zeros((2, 3), np.float32), name="v")
    v.assign_add(1.0)
    v.assign_add([1.0, 2.0, 3.0])
    v.assign_sub(np.ones((1, 3), np.float32))
    np.testing.assert_array_equal(v.numpy(), [[1.0, 2.0, 3.0]] * 2)
    with pytest.raises(ValueError, match=re.escape("assign_add to variable 'v'")):
        v.assign_add(np.ones((4, 2, 3), np.float32))
    with pytest.raises(ValueError, match=re.escape("value's shape (2,)")):
        v.assign_sub(jnp.ones(2))


@pytest.mark.parametrize(
    "var_dtype, value",
    [
        (jnp.float32, np.arange(2, dtype=np.int32)),
        (jnp.bfloat16, np.ones(2, np.float32)),
        (jnp.float32, jnp.ones(2, jnp.float16)),
        (jnp.float16, [1.5, 2.5]),
        (jnp.uint8, [7, 255]),
        (jnp.int8, [1, -2]),
        (jnp.complex64, [2.0, 1.0]),
        (jnp.float32, [True, False]),
        (jnp.bool_, [True, False]),
    ],
)
def test_same_kind_casts_are_allowed(var_dtype, value):
    v = jv.Variable(jnp.zeros(2, var_dtype))
    v.assign(value)
    assert v.dtype == np.dtype(var_dtype)
    assert not v.value.weak_type
    np.testing.assert_array_equal(v.numpy(), np.asarray(value).astype(var_dtype))


@pytest.mark.parametrize(
    "var_dtype, scalar", [(jnp.uint8, 7), (jnp.bfloat16, 1.5), (jnp.float32, 2), (jnp.int8, True)]
)
def test_python_scalars_of_a_compatible_kind_are_allowed(var_dtype, scalar):
    v = jv.Variable(jnp.zeros((), var_dtype))
    v.assign(scalar)
    assert v.dtype == np.dtype(var_dtype) and not v.value.weak_type
    assert v.numpy() == np.asarray(scalar).astype(var_dtype)


@pytest.mark.parametrize(
    "var_dtype, value, src",
    [
        (jnp.int32, np.ones(2, np.float32), "float32"),
        (jnp.int32, [1.5, 2.5], "float"),
        (jnp.float32, np.ones(2, np.complex64), "complex64"),
        (jnp.bool_, np.ones(2, np.int32), "int32"),
        (jnp.bool_, [1, 0], "int"),
        (jnp.uint8, np.ones(2, np.int32), "int32"),
    ],
)
def test_unsafe_casts_raise_type_error_naming_both_dtypes(var_dtype, value, src):
    v = jv.Variable(jnp.zeros(2, var_dtype), name="t")
    before = v.value
    with pytest.raises(
        TypeError, match=f"dtype {src}.*to variable 't' of dtype {np.dtype(var_dtype)}"
    ):
        v.assign(value)
    assert v.value is before


def test_python_integers_that_do_not_fit_are_refused():
    v = jv.Variable(np.zeros(2, np.uint8), name="u")
    with pytest.raises(
        ValueError, match=r"'u': integer values in \[-1, 300\] do not fit dtype uint8"
    ):
        v.assign([300, -1])
    np.testing.assert_array_equal(v.numpy(), [0, 0])


def test_assign_add_with_float_delta_on_int_variable_raises():
    v = jv.Variable([1, 2], name="i")
    with pytest.raises(TypeError, match="dtype float32 to variable 'i' of dtype int32"):
        v.assign_add(0.5)
    with pytest.raises(TypeError, match="'i'"):
        v.assign_add(jnp.ones(2))
    np.testing.assert_array_equal(v.numpy(), [1, 2])


def test_assign_accepts_variables_and_copies_nothing_by_reference():
    a, b = jv.Variable([1.0, 2.0]), jv.Variable([3.0, 4.0])
    a.assign(b)
    b.assign_add(1.0)
    np.testing.assert_array_equal(a.numpy(), [3.0, 4.0])
    a.assign_add(b)
    np.testing.assert_array_equal(a.numpy(), [7.0, 9.0])


@pytest.mark.parametrize("bad", ["x", None, [[1.0], [1.0, 2.0]], object()])
def test_failed_assign_changes_nothing(bad):
    v = jv.Variable([1.0, 2.0])
    before = v.value
    for op in (v.assign, v.assign_add, v.assign_sub):
        with pytest.raises((TypeError, ValueError)):
            op(bad)
    assert v.value is before


# -- indexing -------------------------------------------------------------------------


def test_getitem_returns_an_array():
    v = jv.Variable([[1.0, 2.0], [3.0, 4.0]])
    assert isinstance(v[0], jax.Array)
    np.testing.assert_array_equal(v[:, 1], [2.0, 4.0])


def test_setitem_rebinds_with_at_set():
    v = jv.Variable(np.zeros((2, 3), np.float32))
    old = v.value
    v[0, 1] = 5
    v[1] = [1.0, 2.0, 3.0]
    np.testing.assert_array_equal(v.numpy(), [[0, 5, 0], [1, 2, 3]])
    np.testing.assert_array_equal(old, np.zeros((2, 3)))
    assert v.dtype == np.float32


def test_setitem_follows_the_shape_and_dtype_rules():
    v = jv.Variable([1, 2, 3], name="s")
    before = v.value
    with pytest.raises(TypeError, match="float32 to variable 's' of dtype int32"):
        v[0] = 1.5
    with pytest.raises(ValueError, match=r"variable 's'\[slice\(None, 2, None\)\]"):
        v[:2] = [1, 2, 3]
    assert v.value is before


# -- placement ------------------------------------------------------------------------


def test_default_variables_are_uncommitted_and_mix_with_any_device():
    v = jv.Variable([1.0, 2.0])
    assert not v.value.committed
    elsewhere = jax.device_put(jnp.ones(2), jax.devices()[3])
    result = v + elsewhere
    assert result.devices() == {jax.devices()[3]}


def test_assigning_a_committed_array_keeps_an_uncommitted_variable_uncommitted():
    v = jv.Variable([1.0, 2.0])
    v.assign(jax.device_put(jnp.array([3.0, 4.0]), jax.devices()[5]))
    assert not v.value.committed
    assert v.device == jax.devices()[0]
    v.assign_add(jax.device_put(jnp.ones(2), jax.devices()[5]))
    assert not v.value.committed
    np.testing.assert_array_equal(v.numpy(), [4.0, 5.0])


@pytest.mark.parametrize(
    "spec", [lambda: jax.devices()[2], lambda: "cpu:2", lambda: "/device:CPU:2"]
)
def test_device_argument_commits_and_assignments_follow(spec):
    v = jv.Variable([1.0, 2.0], device=spec())
    assert v.device == jax.devices()[2] and v.value.committed
    v.assign(jax.device_put(jnp.ones(2), jax.devices()[6]))
    assert v.device == jax.devices()[2]
    v.assign_add(jax.device_put(jnp.ones(2), jax.devices()[2]))
    v[0] = 7.0
    assert v.device == jax.devices()[2]
    np.testing.assert_array_equal(v.numpy(), [7.0, 2.0])


def test_sharding_argument_places_over_several_devices_and_assign_keeps_it():
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
    sharding = NamedSharding(mesh, PartitionSpec("data", "model"))
    v = jv.Variable(np.arange(16.0).reshape(8, 2), sharding=sharding)
    assert v.device is None
    assert v.sharding == sharding
    v.assign(jnp.zeros((8, 2)))
    v.assign_add(1.0)
    assert v.sharding == sharding
    np.testing.assert_array_equal(v.numpy(), np.ones((8, 2)))


def test_placement_argument_errors():
    with pytest.raises(ValueError, match="either device= or sharding=, not both"):
        jv.Variable(
            1.0, device="cpu:0", sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])
        )
    with pytest.raises(TypeError, match="must be a jax.sharding.Sharding, got str"):
        jv.Variable(1.0, sharding="cpu")
    with pytest.raises(ValueError, match="Malformed device spec 'cpu-0'"):
        jv.Variable(1.0, device="cpu-0")
    mesh = Mesh(np.array(jax.devices()), ("x",))
    with pytest.raises(ValueError, match=r"'odd' of shape \(3,\) cannot be placed"):
        jv.Variable(np.ones(3), name="odd", sharding=NamedSharding(mesh, PartitionSpec("x")))


def test_missing_device_falls_back_softly_or_raises(caplog):
    with caplog.at_level("WARNING", logger="jaxvars"):
        v = jv.Variable(1.0, device="gpu:0")
    assert v.device == jax.devices()[0] and v.value.committed
    assert "'gpu:0' does not exist" in caplog.text
    jv.config.soft_device_placement = False
    try:
        with pytest.raises(ValueError, match="'cpu:9' does not exist; available devices: cpu:0, "):
            jv.Variable(1.0, device="cpu:9")
    finally:
        jv.config.soft_device_placement = True


# -- array behaviour ------------------------------------------------------------------

X = np.array([[1.0, -2.0], [3.0, 4.0]], np.float32)
Y = np.array([[0.5, 2.0], [-1.0, 3.0]], np.float32)


@pytest.mark.parametrize(
    "op",
    [
        lambda a, b: a + b,
        lambda a, b: a - b,
        lambda a, b: a * b,
        lambda a, b: a / b,
        lambda a, b: a // b,
        lambda a, b: a % b,
        lambda a, b: a**2,
        lambda a, b: 2**a,
        lambda a, b: a @ b,
        lambda a, b: b @ a,
        lambda a, b: 1 - a,
        lambda a, b: 3 / a,
        lambda a, b: a < b,
        lambda a, b: a <= b,
        lambda a, b: a == b,
        lambda a, b: a != b,
        lambda a, b: a > b,
        lambda a, b: a >= b,
        lambda a, b: -a,
        lambda a, b: +a,
        lambda a, b: abs(a),
        lambda a, b: divmod(a, b)[1],
    ],
)
@pytest.mark.parametrize("other_kind", ["numpy", "jax", "variable"])
def test_operators_match_the_raw_array_and_never_mutate(op, other_kind):
    v = jv.Variable(X)
    other = {"numpy": Y, "jax": jnp.asarray(Y), "variable": jv.Variable(Y)}[other_kind]
    before = v.value
    result = op(v, other)
    expected = op(jnp.asarray(X), jnp.asarray(Y))
    assert not isinstance(result, jv.Variable)
    np.testing.assert_allclose(np.asarray(result), np.asarray(expected))
    assert v.value is before


def test_reflected_operators_with_numpy_on_the_left_return_jax_arrays():
    v = jv.Variable(X)
    assert isinstance(Y + v, jax.Array)
    np.testing.assert_array_equal(Y + v, Y + X)
    np.testing.assert_array_equal(Y @ v, Y @ X)


def test_bitwise_operators_on_integer_and_bool_variables():
    i = jv.Variable([6, 3])
    np.testing.assert_array_equal(i & 5, [4, 1])
    np.testing.assert_array_equal(i | 1, [7, 3])
    np.testing.assert_array_equal(i ^ 1, [7, 2])
    np.testing.assert_array_equal(i << 1, [12, 6])
    np.testing.assert_array_equal(i >> 1, [3, 1])
    np.testing.assert_array_equal(~jv.Variable([True, False]), [False, True])


def test_equality_is_elementwise():
    a = jv.Variable([[1.0, 2.0], [3.0, 4.0]], name="Mark")
    b = jv.Variable(a.value + 1, name="Mark")
    np.testing.assert_array_equal(a == b, np.zeros((2, 2), bool))
    np.testing.assert_array_equal(a == a, np.ones((2, 2), bool))


def test_python_protocols():
    v = jv.Variable([[1.0, 2.0], [3.0, 4.0]])
    assert len(v) == 2
    np.testing.assert_array_equal(list(v)[1], [3.0, 4.0])
    s = jv.Variable(2.5)
    assert float(s) == 2.5 and int(s) == 2 and complex(s) == 2.5 + 0j
    assert bool(jv.Variable(True)) and not bool(jv.Variable(0.0))
    assert [10, 20, 30][jv.Variable(1)] == 20
    assert f"{s:.1f}" == "2.5"
    with pytest.raises((TypeError, ValueError)):
        bool(v)


@pytest.mark.parametrize(
    "fn",
    [
        jnp.sum,
        jnp.mean,
        lambda v: jnp.argmax(v, axis=0),
        lambda v: jnp.reshape(v, (1, 4)),
        lambda v: jnp.matmul(v, v),
        lambda v: jnp.dot(v, v),
        lambda v: jnp.where(v > 1, v, 0),
        lambda v: jnp.concatenate([v, v]),
        jax.nn.relu,
        jax.nn.softmax,
        jax.nn.sigmoid,
        lambda v: jax.jit(lambda x: x * 2)(v),
        lambda v: jax.vmap(lambda row: row.sum())(v),
    ],
)
def test_jnp_and_jax_nn_functions_accept_variables(fn):
    v = jv.Variable(X)
    before = v.value
    np.testing.assert_allclose(np.asarray(fn(v)), np.asarray(fn(jnp.asarray(X))))
    assert v.value is before


@pytest.mark.parametrize("jitted", [False, True])
def test_lax_primitives_accept_variables(jitted):
    images = jv.Variable(np.ones((1, 4, 4, 2), np.float32))
    kernel = jv.Variable(np.ones((3, 3, 2, 2), np.float32))

    def conv():
        return jax.lax.conv_general_dilated(
            images, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    out = jax.jit(conv)() if jitted else conv()
    assert out.shape == (1, 4, 4, 2) and float(out[0, 1, 1, 0]) == 18.0
    np.testing.assert_array_equal(jax.lax.add(images, 1.0), 2 * np.ones((1, 4, 4, 2)))


def test_numpy_conversion():
    v = jv.Variable(X)
    np.testing.assert_array_equal(np.asarray(v), X)
    assert np.asarray(v, dtype=np.float64).dtype == np.float64
    np.testing.assert_array_equal(np.sum(np.asarray(v)), X.sum())


def test_array_methods_read_the_current_value():
    v = jv.Variable(X)
    np.testing.assert_array_equal(v.T, X.T)
    np.testing.assert_array_equal(v.reshape(4), X.reshape(4))
    np.testing.assert_array_equal(v.at[0, 0].set(9.0)[0, 0], 9.0)
    assert v.numpy()[0, 0] == 1.0  # .at[...] returns a new array, as in JAX
    with pytest.raises(AttributeError, match="no attribute 'assign_mul'"):
        v.assign_mul(2)


def test_copy_module_makes_independent_variables():
    v = jv.Variable([1.0], name="c", trainable=False)
    for clone in (copy.copy(v), copy.deepcopy(v)):
        assert clone is not v and clone.name == "c" and clone.trainable is False
        clone.assign([5.0])
        np.testing.assert_array_equal(v.numpy(), [1.0])


# -- transforms JAX controls: reads work, writes are refused ---------------------------


def test_assigning_a_tracer_inside_raw_jit_raises_and_leaks_nothing():
    v = jv.Variable([1.0, 2.0], name="counter")
    before = v.value

    @jax.jit
    def step(x):
        v.assign(x)
        return x

    with pytest.raises(TypeError, match="variable 'counter'.*Use jv.jit instead of jax.jit"):
        step(jnp.ones(2))
    assert v.value is before
    with pytest.raises(TypeError, match="'counter'.*jv.fori_loop"):
        jax.vmap(lambda x: v.assign_add(x))(jnp.ones((3, 2)))
    assert v.value is before


def test_jax_transforms_see_a_variable_argument_as_its_value():
    v = jv.Variable([1.0, 2.0], name="w")
    doubled = jax.tree.map(lambda x: x * 2, [v])
    assert isinstance(doubled[0], jax.Array)
    np.testing.assert_array_equal(doubled[0], [2.0, 4.0])
    np.testing.assert_allclose(jax.jit(lambda u: jax.lax.exp(u))(v), np.exp([1.0, 2.0]), rtol=1e-6)
    grads = jax.grad(lambda u: jnp.sum(u**2))(v)
    np.testing.assert_array_equal(grads, [2.0, 4.0])
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0])


def test_pytree_leaves_are_values():
    v = jv.Variable([1.0, 2.0])
    leaves = jax.tree.leaves({"a": v, "b": [v]})
    assert all(leaf is v.value for leaf in leaves) and len(leaves) == 2


# -- lifetime and threads ----------------------------------------------------------------


def test_a_dropped_variable_is_freed_even_after_jitted_use():
    v = jv.Variable(np.ones((3, 3), np.float32))
    jnp.sum(v)
    jax.nn.relu(v)
    v.assign_add(1.0)
    ref = weakref.ref(v)
    del v
    gc.collect()
    assert ref() is None


def test_concurrent_assign_add_loses_no_update():
    v = jv.Variable(0, name="count")

    def work():
        for _ in range(1000):
            v.assign_add(1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert int(v) == 8000


# -- in-place operators, placement of operands, import (issue: trust) -----------------------


def test_in_place_operators_assign_and_keep_the_variable():
    v = jv.Variable([1.0, 2.0], name="v")
    same = v
    v += 1
    v *= jnp.array([2.0, 3.0])
    v -= 1
    v /= 2
    v **= 2
    assert v is same and isinstance(v, jv.Variable)
    np.testing.assert_allclose(v.numpy(), [1.5**2, 4.0**2])
    n = jv.Variable([6, 7], name="n")
    n //= 2
    n %= 2
    n <<= 1
    n |= 1
    np.testing.assert_array_equal(n.numpy(), [3, 3])
    m = jv.Variable(jnp.eye(2), name="m")
    m @= jnp.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(m.numpy(), [[1.0, 2.0], [3.0, 4.0]])


def test_in_place_operators_follow_the_assign_rules_and_change_nothing_on_error():
    v = jv.Variable([1, 2], name="ints")
    with pytest.raises(TypeError, match="'ints'"):
        v /= 2  # float result into an int variable
    with pytest.raises(ValueError, match="'ints'.*\\(2,\\).*\\(3,\\)"):
        v += jnp.ones(3, jnp.int32)
    m = jv.Variable(jnp.eye(2), name="m")
    with pytest.raises(ValueError, match="'m'"):
        m @= jnp.ones((2, 3))
    np.testing.assert_array_equal(v.numpy(), [1, 2])
    np.testing.assert_array_equal(m.numpy(), np.eye(2))


def test_in_place_operators_inside_jit():
    v = jv.Variable(1.0, name="v")

    @jv.jit
    def step(x):
        w = v
        w += x
        return w

    assert step(2.0) is v and float(v) == 3.0


def test_operands_committed_to_another_device_take_the_variables_placement():
    cpu0, cpu1 = jax.devices()[:2]
    v = jv.Variable(jnp.zeros(4), name="v", device=cpu0)
    elsewhere = jax.device_put(jnp.ones(4), cpu1)
    v.assign_add(elsewhere)
    v.assign_sub(jax.device_put(jnp.float32(0.5), cpu1))  # broadcast
    v[1:3] = jax.device_put(jnp.array([7.0, 8.0]), cpu1)
    np.testing.assert_array_equal(v.numpy(), [0.5, 7.0, 8.0, 0.5])
    assert v.device == cpu0 and v.value.committed
    mesh = Mesh(np.array(jax.devices()[:4]), ("x",))
    sharded = jv.Variable(jnp.zeros(8), sharding=NamedSharding(mesh, PartitionSpec("x")))
    sharded.assign_add(jax.device_put(jnp.ones(8), jax.devices()[5]))
    sharded[0] = jax.device_put(jnp.float32(3.0), jax.devices()[6])
    assert sharded.sharding == NamedSharding(mesh, PartitionSpec("x"))
    np.testing.assert_array_equal(sharded.numpy(), [3.0] + [1.0] * 7)


def test_import_starts_no_backend_so_jax_can_still_be_configured():
    import subprocess
    import sys

    code = (
        "import jax, jaxvars as jv\n"
        "jax.config.update('jax_num_cpu_devices', 3)\n"
        "jv.random.set_seed(1)\n"
        "assert len(jax.devices()) == 3, jax.devices()\n"
        "print(jv.Variable(1.0).device)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
