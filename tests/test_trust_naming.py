"""Names as TF gives them: scopes, default names, templates, initializers and
stores (API.md sections 2 and 10)."""

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvars as jv

# -- jv.Variable names follow the name scope, which a variable scope extends -----------


def test_a_variable_scope_extends_the_enclosing_name_scope():
    with jv.name_scope("Train"):
        with jv.variable_scope("Model"):
            plain = jv.Variable(1.0)
            shared = jv.get_variable("w", [1])
            with jv.variable_scope(None, default_name="dense"):
                inner = jv.Variable(2.0, name="b")
                kernel = jv.get_variable("kernel", [1])
    assert plain.name == "Train/Model/Variable"
    assert inner.name == "Train/Model/dense/b"
    # get_variable follows the variable scopes only, as in TF.
    assert shared.name == "Model/w" and kernel.name == "Model/dense/kernel"
    assert list(jv.default_store()) == ["Model/w", "Model/dense/kernel"]


def test_reentering_a_scope_object_restores_its_name_scope():
    with jv.name_scope("Train"), jv.variable_scope("Model") as model:
        pass
    with jv.name_scope("Eval"):
        with jv.variable_scope(model):
            again = jv.Variable(0.0, name="v")
        # The top scope has no name scope of its own: re-entering it keeps the current one.
        with jv.variable_scope(jv.get_variable_scope()):
            top = jv.Variable(0.0, name="t")
    assert again.name == "Train/Model/v" and top.name == "Eval/t"


# -- default names: numbered afresh in a re-entered parent and in each template call ----


def dense(x, units):
    """A TF1 layer (tf.layers.dense, slim.fully_connected): it names itself."""
    with jv.variable_scope(None, default_name="dense"):
        kernel = jv.get_variable("kernel", [x.shape[-1], units])
    return x @ kernel


@pytest.mark.parametrize("reuse", [True, jv.AUTO_REUSE], ids=["True", "AUTO_REUSE"])
def test_reentering_the_parent_numbers_default_names_afresh(reuse):
    x = jnp.ones((1, 2))
    with jv.variable_scope("model"):
        first = dense(dense(x, 2), 3)
    with jv.variable_scope("model", reuse=reuse):
        again = dense(dense(x, 2), 3)
    np.testing.assert_array_equal(first, again)
    assert list(jv.default_store()) == ["model/dense/kernel", "model/dense_1/kernel"]


def test_without_reuse_a_reentered_parent_collides_as_in_tf():
    x = jnp.ones((1, 2))
    with jv.variable_scope("model"):
        dense(x, 2)
    with pytest.raises(ValueError, match="Variable 'model/dense/kernel' already exists"):
        with jv.variable_scope("model"):
            dense(x, 2)
    assert list(jv.default_store()) == ["model/dense/kernel"]


def test_a_scope_object_reentered_numbers_its_default_names_afresh():
    with jv.variable_scope("tower") as tower:
        dense(jnp.ones((1, 2)), 2)
    with jv.variable_scope(tower, reuse=True):
        dense(jnp.ones((1, 2)), 2)
    with jv.variable_scope("tower"):
        with jv.variable_scope(None, default_name="dense") as fresh:
            pass
    assert fresh.name == "tower/dense" and list(jv.default_store()) == ["tower/dense/kernel"]


def test_a_scope_object_entered_inside_itself_keeps_the_outer_entrys_names():
    """A module method calling another: the inner entry gives back what it found."""
    with jv.variable_scope("net") as net:
        with jv.variable_scope(None, default_name="dense") as a:
            pass
        with jv.variable_scope(net):
            with jv.variable_scope(None, default_name="dense") as inner:
                pass
        with jv.variable_scope(None, default_name="dense") as b:
            pass
    assert (a.name, inner.name, b.name) == ("net/dense", "net/dense_1", "net/dense_1")


def test_top_level_default_names_keep_counting():
    names = []
    for _ in range(2):
        with jv.variable_scope(None, default_name="dense") as scope:
            names.append(scope.name)
    assert names == ["dense", "dense_1"]


def q_network(x):
    """The slim / Dopamine pattern: layers named by default inside a template."""
    return dense(jax.nn.relu(dense(x, 4)), 2)


def test_a_template_reuses_its_default_names_on_every_call():
    network = jv.make_template("online", q_network)
    x = jnp.ones((3, 5))
    first = network(x)
    second = network(x)
    np.testing.assert_array_equal(first, second)
    assert list(jv.default_store()) == ["online/dense/kernel", "online/dense_1/kernel"]
    target = jv.make_template("target", q_network)
    target(x)
    assert len(jv.default_store()) == 4  # its own two layers, named the same way


def test_a_templates_default_names_are_stable_inside_jit():
    network = jv.make_template("q", q_network)
    traces = []

    @jv.jit
    def step(x):
        traces.append(1)
        return network(x) + network(x)

    for batch in (1, 1, 4):  # discovery and trace, a cached call, a retrace
        out = step(jnp.ones((batch, 5)))
    assert len(traces) == 3
    assert list(jv.default_store()) == ["q/dense/kernel", "q/dense_1/kernel"]
    np.testing.assert_allclose(out, 2 * network(jnp.ones((4, 5))), rtol=1e-6)


def test_a_modules_default_names_are_the_same_on_every_call():
    class Layer(jv.Module):
        def __call__(self, x):
            return dense(x, 2)

    layer = Layer()
    x = jnp.ones((1, 2))
    np.testing.assert_array_equal(layer(x), layer(x))
    assert list(jv.default_store()) == ["layer/dense/kernel"]


def test_default_names_inside_jit_in_a_reentered_scope():
    @jv.jit
    def model(x):
        with jv.variable_scope("net", reuse=jv.AUTO_REUSE):
            return dense(dense(x, 3), 2)

    for batch in (1, 4):
        model(jnp.ones((batch, 5)))
    assert list(jv.default_store()) == ["net/dense/kernel", "net/dense_1/kernel"]


# -- default names skip names in use, however they were opened ------------------------


def test_default_names_skip_a_scope_opened_by_name():
    with jv.variable_scope(None, default_name="dense") as first:
        a = jv.get_variable("kernel", [1])
    with jv.variable_scope("dense_1"):
        pass
    with jv.variable_scope(None, default_name="dense", reuse=jv.AUTO_REUSE) as second:
        b = jv.get_variable("kernel", [1])
    with jv.variable_scope(None, default_name="dense") as third:
        pass
    assert (first.name, second.name, third.name) == ("dense", "dense_2", "dense_3")
    assert a is not b and list(jv.default_store()) == ["dense/kernel", "dense_2/kernel"]


def test_default_names_skip_a_scope_opened_by_name_under_auto_reuse():
    """The silent case: AUTO_REUSE would have shared the hand-made scope's kernel."""
    with jv.variable_scope("net", reuse=jv.AUTO_REUSE):
        with jv.variable_scope("dense_1"):
            by_hand = jv.get_variable("kernel", [1])
        with jv.variable_scope(None, default_name="dense"):
            jv.get_variable("kernel", [1])
        with jv.variable_scope(None, default_name="dense"):
            generated = jv.get_variable("kernel", [1])
    assert generated is not by_hand and generated.name == "net/dense_2/kernel"


def test_template_names_skip_scopes_opened_by_name():
    first = jv.make_template("tpl", lambda: jv.get_variable("v", initializer=0.0))
    with jv.variable_scope("tpl_1"):
        by_hand = jv.get_variable("v", initializer=1.0)
    second = jv.make_template("tpl", lambda: jv.get_variable("v", initializer=2.0))
    assert first.variable_scope.name == "tpl"  # type: ignore[attr-defined]
    assert second.variable_scope.name == "tpl_2"  # type: ignore[attr-defined]
    assert second() is not by_hand and float(second()) == 2.0


def test_templates_made_in_a_reentered_scope_stay_distinct():
    """API.md: two templates with one name in one store get distinct scopes."""
    with jv.variable_scope("outer"):
        a = jv.make_template("t", lambda: jv.get_variable("v", initializer=0.0))
    with jv.variable_scope("outer"):
        b = jv.make_template("t", lambda: jv.get_variable("v", initializer=0.0))
    assert a().name == "outer/t/v" and b().name == "outer/t_1/v"


def test_a_default_name_never_takes_a_modules_or_templates_scope():
    class Dense(jv.Module):
        pass

    with jv.variable_scope("outer"):
        module = Dense()
        template = jv.make_template("dense_1", lambda: None)
    with jv.variable_scope("outer"):
        with jv.variable_scope(None, default_name="dense") as scope:
            pass
    assert module.scope_name == "outer/dense"
    assert template.variable_scope.name == "outer/dense_1"  # type: ignore[attr-defined]
    assert scope.name == "outer/dense_2"


def test_module_names_skip_scopes_opened_by_name():
    class Dense(jv.Module):
        pass

    with jv.variable_scope("dense_1"):
        pass
    assert [Dense().name, Dense().name] == ["dense", "dense_2"]


def test_clear_forgets_every_name():
    store = jv.Store()
    with store:
        with jv.variable_scope(None, default_name="dense"):
            pass
        jv.make_template("tpl", lambda: None)
        store.clear()
        with jv.variable_scope(None, default_name="dense") as scope:
            pass
        template = jv.make_template("tpl", lambda: None)
    assert scope.name == "dense" and template.variable_scope.name == "tpl"  # type: ignore[attr-defined]


# -- initializers: the signatures accepted ------------------------------------------------


@pytest.mark.parametrize(
    "function", [jnp.ones, np.ones, jnp.zeros], ids=["jnp.ones", "np.ones", "jnp.zeros"]
)
def test_shape_dtype_functions_are_initializers(function):
    v = jv.get_variable("v", (2, 3), initializer=function)
    assert v.shape == (2, 3) and v.dtype == np.float32
    np.testing.assert_array_equal(v.value, function((2, 3), np.float32))
    with jv.variable_scope("ints", dtype=jnp.int32, initializer=function):
        ints = jv.get_variable("i", [2])
    assert ints.dtype == np.int32
    np.testing.assert_array_equal(ints.value, function(2, np.int32))


class TFStyleConstant:
    """The shape of a tf.compat.v1 initializer object."""

    def __init__(self, value):
        self.value = value

    def __call__(self, shape, dtype=None, partition_info=None):
        return np.full(shape, self.value, dtype)


def test_tf_style_initializer_objects_are_called_with_shape_and_dtype():
    v = jv.get_variable("v", [3], initializer=TFStyleConstant(7.0))
    assert v.dtype == np.float32
    np.testing.assert_array_equal(v.value, [7.0, 7.0, 7.0])


def test_a_shape_dtype_initializer_draws_no_random_key():
    jv.get_variable("ones", [2], initializer=jnp.ones)
    after = jv.get_variable("random", [4]).numpy()
    other = jv.Store()
    jv.random.set_seed(0)
    with other:
        alone = jv.get_variable("random", [4]).numpy()
    np.testing.assert_array_equal(after, alone)


@pytest.mark.parametrize(
    "initializer",
    [jax.nn.initializers.ones, lambda key, shape, dtype: jnp.ones(shape, dtype)],
    ids=["jax.nn.initializers.ones", "lambda key, shape, dtype"],
)
def test_key_shape_dtype_initializers_still_get_a_key(initializer):
    v = jv.get_variable("v", [2], initializer=initializer)
    np.testing.assert_array_equal(v.value, [1.0, 1.0])


def test_an_ambiguous_initializer_is_called_with_a_key():
    seen = []

    def init(*args):
        seen.append(len(args))
        return jnp.zeros(args[1], args[2])

    jv.get_variable("v", [2], initializer=init)
    assert seen == [3]


@pytest.mark.parametrize(
    "initializer",
    [lambda: 1.0, lambda shape: jnp.ones(shape), lambda a, b, c, d: None],
    ids=["no arguments", "shape only", "four arguments"],
)
def test_an_initializer_of_another_signature_is_refused_naming_the_variable(initializer):
    with pytest.raises(TypeError) as e, jv.variable_scope("layer"):
        jv.get_variable("w", [2], initializer=initializer)
    message = str(e.value)
    assert isinstance(e.value, jv.JaxvarsError)
    assert "get_variable('layer/w'): cannot call the initializer" in message
    assert "f(key, shape, dtype)" in message and "f(shape, dtype)" in message
    assert "jax.nn.initializers" in message and "jnp.zeros" in message
    assert "an array-like constant" in message
    assert len(jv.default_store()) == 0


# -- a variable that another store holds ---------------------------------------------------


def test_reuse_of_a_variable_in_another_store_names_both_stores():
    training = jv.Store()
    with training, jv.variable_scope("model"):
        w = jv.get_variable("w", [2])
    with pytest.raises(ValueError) as e, jv.variable_scope("model", reuse=True):
        jv.get_variable("w", [2])
    message = str(e.value)
    assert "Variable 'model/w' does not exist in the active store (the default store)" in message
    assert f"held by the Store created at {__file__}:" in message
    assert "`with store:`" in message
    assert "AUTO_REUSE" not in message
    assert len(jv.default_store()) == 0 and list(training) == ["model/w"]
    with training, jv.variable_scope("model", reuse=True):
        assert jv.get_variable("w", [2]) is w  # the fix works


def test_reuse_from_inside_another_store_names_the_default_store_as_holder():
    jv.get_variable("w", [2])
    scratch = jv.Store()
    with (
        scratch,
        pytest.raises(ValueError) as e,
        jv.variable_scope(jv.get_variable_scope(), reuse=True),
    ):
        jv.get_variable("w")
    message = str(e.value)
    assert "does not exist in the active store (the Store created at" in message
    assert "held by the default store" in message
    assert len(scratch) == 0


def test_a_missing_variable_in_no_store_keeps_the_auto_reuse_hint():
    jv.Store()  # a store that holds nothing
    with pytest.raises(ValueError) as e, jv.variable_scope("s", reuse=True):
        jv.get_variable("nowhere", [1])
    assert "Variable 's/nowhere' does not exist" in str(e.value)
    assert "reuse=jv.AUTO_REUSE" in str(e.value) and "held by" not in str(e.value)


def test_stores_are_not_kept_alive_to_find_variables():
    def make():
        store = jv.Store()
        with store:
            jv.get_variable("gone", [1])
        return store

    store = make()
    del store
    gc.collect()
    with pytest.raises(ValueError) as e, jv.variable_scope(jv.get_variable_scope(), reuse=True):
        jv.get_variable("gone")
    assert "held by" not in str(e.value)
