"""API.md section 10, scopes and variables: what TF1 code needs from the store."""

import gc

import jax.numpy as jnp
import numpy as np
import pytest
from models import Dense

import jaxvars as jv

# -- get_variable_scope --------------------------------------------------------------


def test_top_scope_and_reentering_it():
    top = jv.get_variable_scope()
    assert top.name == "" and top.reuse is False
    with jv.variable_scope("a") as a:
        assert jv.get_variable_scope() is a and a.reuse is False
        with jv.variable_scope(jv.get_variable_scope()) as again:
            w = jv.get_variable("w", [1])
        assert again.name == "a" and w.name == "a/w"
    with jv.variable_scope(jv.get_variable_scope()):
        assert jv.get_variable("v", [1]).name == "v"


def test_reuse_variables_in_the_tower_loop_shares_the_variables():
    """TF's multi-GPU CIFAR-10 trainer: towers share through reuse_variables()."""
    made = []
    with jv.variable_scope(jv.get_variable_scope()):
        for i in range(3):
            with jv.name_scope(f"tower_{i}"):
                made.append(jv.get_variable("weights", [2, 2]))
            jv.get_variable_scope().reuse_variables()
    assert made[0] is made[1] is made[2]
    assert list(jv.default_store()) == ["weights"]
    # The re-entered scope's reuse ended with its block; the top still creates.
    assert jv.get_variable_scope().reuse is False


def test_the_tower_loop_inside_a_jitted_step_creates_once_and_retraces():
    """Each trace reruns the Python: what the first pass made, later passes get."""
    traces = []

    @jv.jit
    def step(x):
        traces.append(1)
        outs = []
        with jv.variable_scope(jv.get_variable_scope()):
            for i in range(2):
                with jv.name_scope(f"tower_{i}"):
                    outs.append(x * jv.get_variable("w", [2]))
                jv.get_variable_scope().reuse_variables()
        return outs[0] + outs[1]

    w_value = None
    for x in (jnp.ones(2), jnp.ones(2) * 2, jnp.ones((3, 2))):  # the last retraces
        out = step(x)
        w_value = jv.default_store()["w"].numpy()
        np.testing.assert_allclose(out, 2 * x * w_value, rtol=1e-6)
    assert list(jv.default_store()) == ["w"]
    assert len(traces) == 3  # discovery and trace, then a trace for the new shape

    @jv.jit
    def another(x):
        return x * jv.get_variable("w", [2])  # someone else's "w": still an error

    with pytest.raises(ValueError, match="Variable 'w' already exists"):
        another(jnp.ones(2))


def test_reuse_variables_at_the_top_lasts_until_the_store_is_cleared():
    store = jv.Store()
    with store:
        w = jv.get_variable("w", [1])
        jv.get_variable_scope().reuse_variables()
        assert jv.get_variable("w") is w
    assert jv.get_variable_scope().reuse is False  # the default store's top scope
    with store:
        assert jv.get_variable_scope().reuse is True
        store.clear()
        assert jv.get_variable_scope().reuse is False


def test_scope_reuse_reads_false_true_or_auto_reuse():
    with jv.variable_scope("s", reuse=jv.AUTO_REUSE) as s:
        assert s.reuse is jv.AUTO_REUSE
    with jv.variable_scope("s", reuse=True) as s:
        assert s.reuse is True
    with jv.variable_scope("s", reuse=False) as s:
        assert s.reuse is False


# -- default_name ----------------------------------------------------------------------


def test_default_name_gives_unique_sibling_scopes():
    names = []
    for _ in range(3):
        with jv.variable_scope(None, default_name="dense") as s:
            names.append(s.name)
            jv.get_variable("kernel", [1])
    with jv.variable_scope("block"):
        with jv.variable_scope(None, default_name="dense") as inner:
            pass
    assert names == ["dense", "dense_1", "dense_2"] and inner.name == "block/dense"
    assert list(jv.default_store()) == ["dense/kernel", "dense_1/kernel", "dense_2/kernel"]


def test_a_given_name_wins_and_named_scopes_are_skipped():
    with jv.variable_scope("conv", default_name="ignored") as named:
        pass
    with jv.variable_scope(None, default_name="conv") as generated:
        pass
    assert named.name == "conv" and generated.name == "conv_1"


def dense(x, units):
    """A TF1 layer: it names itself with default_name."""
    with jv.variable_scope(None, default_name="dense"):
        kernel = jv.get_variable("kernel", [x.shape[-1], units])
    return x @ kernel


def test_default_names_inside_jit_are_the_same_on_every_pass():
    traces = []

    @jv.jit
    def model(x):
        traces.append(1)
        return dense(dense(x, 3), 2)

    for batch in (1, 1, 4):  # discovery and trace, a cached call, a retrace
        out = model(jnp.ones((batch, 5)))
    assert len(traces) == 3
    assert list(jv.default_store()) == ["dense/kernel", "dense_1/kernel"]
    store = jv.default_store()
    np.testing.assert_allclose(
        out, jnp.ones((4, 5)) @ store["dense/kernel"].value @ store["dense_1/kernel"].value
    )
    # Eagerly, or from another function, each call names new layers (as in TF).
    dense(jnp.ones((1, 5)), 3)
    assert "dense_2/kernel" in jv.default_store()


def test_default_name_errors():
    with pytest.raises(ValueError, match="needs a default_name"):
        with jv.variable_scope(None):
            pass
    with pytest.raises(ValueError, match="nothing to reuse|no variables to reuse"):
        with jv.variable_scope(None, default_name="d", reuse=True):
            pass
    with pytest.raises(TypeError, match="default_name must be a str.*reuse= by keyword"):
        with jv.variable_scope("x", True):  # type: ignore[arg-type]  # reuse passed positionally
            pass


# -- custom getters ----------------------------------------------------------------------


def mixed_precision_getter(getter, name, shape=None, dtype=None, *args, **kwargs):
    """TF's float32-storage getter: create float32, compute in the asked dtype."""
    variable = getter(name, shape, jnp.float32, *args, **kwargs)
    return variable.astype(dtype) if dtype != jnp.float32 else variable


def test_custom_getter_creates_float32_and_returns_bfloat16():
    with jv.variable_scope("mp", custom_getter=mixed_precision_getter, dtype=jnp.bfloat16):
        kernel = jv.get_variable("kernel", [2, 3])
    stored = jv.default_store()["mp/kernel"]
    assert stored.dtype == np.float32 and kernel.dtype == jnp.bfloat16
    np.testing.assert_array_equal(kernel, stored.value.astype(jnp.bfloat16))

    # Inside jv.jit, and under jv.grad: gradients reach the float32 variable.
    def loss():
        getter, dtype = mixed_precision_getter, jnp.bfloat16
        with jv.variable_scope("mp", reuse=True, custom_getter=getter, dtype=dtype):
            k = jv.get_variable("kernel", [2, 3])
        assert k.dtype == jnp.bfloat16
        return jnp.sum(k.astype(jnp.float32) * 2.0)

    grad = jv.jit(jv.grad(loss, stored))()
    assert grad.dtype == np.float32
    np.testing.assert_array_equal(grad, np.full((2, 3), 2.0, np.float32))


def test_custom_getters_compose_innermost_first():
    calls = []

    def tagging(tag):
        def getter(next_getter, name, *args, **kwargs):
            calls.append(tag)
            return next_getter(name, *args, **kwargs)

        return getter

    with jv.variable_scope("outer", custom_getter=tagging("outer")):
        with jv.variable_scope("inner", custom_getter=tagging("inner")):
            v = jv.get_variable("v", [1])
    assert calls == ["inner", "outer"] and v.name == "outer/inner/v"
    calls.clear()
    with jv.variable_scope("outer", custom_getter=tagging("outer"), reuse=True):
        # get_variable's own getter replaces the scopes' (as in TF).
        assert jv.get_variable("inner/v", custom_getter=tagging("own")) is v
    assert calls == ["own"]


def test_custom_getter_may_change_arguments_and_result():
    def scaled(getter, name, *args, **kwargs):
        kwargs["trainable"] = False
        return getter(name, *args, **kwargs) * 10.0

    with jv.variable_scope("s", custom_getter=scaled):
        out = jv.get_variable("v", initializer=[1.0, 2.0])
    assert out.tolist() == [10.0, 20.0]
    assert jv.default_store()["s/v"].trainable is False


def test_a_getter_that_drops_reuse_gets_the_scopes():
    def minimal(getter, name, shape=None, **kwargs):
        return getter(name, shape)  # no reuse= passed on: the scope's applies

    with jv.variable_scope("s", custom_getter=minimal):
        made = jv.get_variable("v", [2])
    with jv.variable_scope("s", custom_getter=minimal, reuse=True):
        assert jv.get_variable("v", [2]) is made


# -- regularizers ------------------------------------------------------------------------


def squares(x):
    return jnp.sum(x**2)


def test_regularizers_from_get_variable_scope_and_variable():
    with jv.variable_scope("layer", regularizer=squares):
        w = jv.get_variable("w", initializer=[1.0, 2.0])
        with jv.variable_scope("inner"):
            u = jv.get_variable("u", initializer=[3.0])  # inherited
        jv.get_variable("b", initializer=[5.0], regularizer=lambda x: 0.5 * jnp.sum(x))
    plain = jv.Variable([2.0], name="plain", regularizer=squares)
    free = jv.get_variable("free", initializer=[100.0])
    assert w.regularizer is squares and u.regularizer is squares and free.regularizer is None
    assert [float(x) for x in jv.regularization_losses()] == [5.0, 9.0, 2.5, 4.0]
    assert float(jv.regularization_loss()) == 20.5
    assert float(jv.regularization_loss("layer/inner")) == 9.0
    assert float(jv.regularization_loss([w, free])) == 5.0
    assert float(jv.regularization_loss("nothing")) == 0.0
    assert jv.regularization_loss("nothing").dtype == np.float32
    del plain


def test_regularization_loss_uses_current_values_eagerly_jitted_and_under_grad():
    w = jv.get_variable("w", initializer=[1.0, 2.0], regularizer=squares)
    step_loss = jv.jit(lambda: jv.regularization_loss())
    assert float(step_loss()) == 5.0
    w.assign([3.0, 4.0])
    assert float(jv.regularization_loss()) == 25.0 and float(step_loss()) == 25.0
    grad = jv.grad(lambda: jv.regularization_loss(), w)()
    np.testing.assert_array_equal(grad, [6.0, 8.0])


def test_a_new_regularized_variable_retraces_but_other_variables_do_not():
    jv.get_variable("w", initializer=[1.0], regularizer=squares)
    traces = []

    @jv.jit
    def total():
        traces.append(1)
        return jv.regularization_loss()

    assert float(total()) == 1.0
    runs = len(traces)
    jv.Variable([7.0], name="unrelated")
    jv.get_variable("plain", initializer=[3.0])
    assert float(total()) == 1.0 and len(traces) == runs  # no retrace
    jv.get_variable("w2", initializer=[2.0], regularizer=squares)
    assert float(total()) == 5.0 and len(traces) > runs  # it joins the sum


def test_module_variables_regularized_by_module_scope():
    layer = Dense(2, 2)
    reg = jv.Variable(jnp.ones(2), name="r", regularizer=squares)
    layer.extra = reg
    assert float(jv.regularization_loss(layer)) == 2.0


def test_regularizer_errors_name_the_variable():
    with pytest.raises(TypeError, match="regularizer of variable 'v'"):
        jv.Variable(1.0, name="v", regularizer=3.0)  # type: ignore[arg-type]
    vec = jv.Variable([1.0, 2.0], name="vec", regularizer=lambda x: x)
    with pytest.raises(ValueError, match="regularizer of variable 'vec'.*shape \\(2,\\)"):
        jv.regularization_loss()
    del vec
    with pytest.raises(TypeError, match="scope must be None, a scope name.*holding int"):
        jv.regularization_loss([1])


# -- collections and the active store -----------------------------------------------------


def test_default_collections_and_local_variables():
    w = jv.get_variable("w", [1])
    frozen = jv.get_variable("frozen", [1], trainable=False)
    local = jv.get_variable("count", [], collections=[jv.GraphKeys.LOCAL_VARIABLES])
    mine = jv.Variable(1.0, name="mine", collections=["mine", jv.GraphKeys.GLOBAL_VARIABLES])
    assert jv.global_variables() == [w, frozen, mine]
    assert jv.trainable_variables() == [w]
    assert jv.local_variables() == [local]
    assert jv.get_collection("mine") == [mine]
    assert jv.get_collection("nothing") == []
    w.trainable = False  # frozen later: no longer listed as trainable
    assert jv.trainable_variables() == []


def test_get_collection_scope_is_a_name_prefix_match():
    with jv.variable_scope("tower_0"):
        a = jv.get_variable("w", [1])
    with jv.variable_scope("tower_1"):
        b = jv.get_variable("w", [1])
    assert jv.global_variables("tower_0") == [a]
    assert jv.trainable_variables("tower_.*") == [a, b]


def test_add_to_collection_holds_variables_only_and_weakly():
    v = jv.Variable(1.0, name="v")
    jv.add_to_collection("targets", v)
    jv.add_to_collection("targets", v)  # once only
    assert jv.get_collection("targets") == [v]
    with pytest.raises(TypeError, match="hold variables only.*regularization_loss"):
        jv.add_to_collection("losses", jnp.ones(()))  # type: ignore[arg-type]
    del v
    gc.collect()
    assert jv.get_collection("targets") == [] and jv.global_variables() == []


def test_collections_follow_the_active_store():
    outside = jv.Variable(0.0, name="outside")
    store = jv.Store()
    with store:
        assert jv.default_store() is store
        inside = jv.get_variable("inside", [1])
        assert jv.global_variables() == [inside]
    assert jv.default_store() is not store
    assert jv.global_variables() == [outside]


def test_reset_default_store_refuses_inside_another_store():
    jv.get_variable("kept", [1])
    with jv.Store(), pytest.raises(ValueError, match="store.clear"):
        jv.reset_default_store()
    assert "kept" in jv.default_store()  # nothing was cleared


def test_get_collection_inside_jit_retraces_when_the_collection_grows():
    a = jv.Variable(1.0, name="a", collections=["sum"])

    @jv.jit
    def total():
        return sum(v.value for v in jv.get_collection("sum"))

    assert float(total()) == 1.0
    b = jv.Variable(2.0, name="b", collections=["sum"])
    assert float(total()) == 3.0
    del a, b


def test_collections_argument_errors():
    with pytest.raises(TypeError, match="list of collection names"):
        jv.Variable(1.0, name="v", collections="variables")  # type: ignore[arg-type]
    assert jv.global_variables() == []


# -- TF keywords ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "keyword, advice",
    [
        ("partitioner", "sharding="),
        ("use_resource", "resource variable"),
        ("caching_device", "jv.device"),
        ("validate_shape", "always checked"),
        ("synchronization", "sharding"),
    ],
)
def test_tf_keywords_say_what_to_use_instead(keyword, advice):
    with pytest.raises(TypeError, match=f"get_variable\\(\\) does not take {keyword}=.*{advice}"):
        jv.get_variable("w", [1], **{keyword: None})
    assert "w" not in jv.default_store()


def test_variable_scope_tf_keywords_and_typos():
    with pytest.raises(TypeError, match="variable_scope\\(\\) does not take partitioner="):
        with jv.variable_scope("s", partitioner=None):
            pass
    with pytest.raises(TypeError, match="unexpected keyword argument 'intializer'"):
        jv.get_variable("w", [1], intializer=None)
    # values= is TF's graph argument: accepted and ignored.
    with jv.variable_scope("s", "default", [jnp.ones(1)]) as s:
        assert s.name == "s"
