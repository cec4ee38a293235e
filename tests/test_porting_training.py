"""API.md section 10, training: optimisers, EMA, sparse updates, jv.jit's automatic statics."""

import enum
import gc
import weakref

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from models import Dense

import jaxvars as jv

# -- constraints ------------------------------------------------------------------------


def unit_interval(x):
    return jnp.clip(x, 0.0, 1.0)


def test_constraint_is_applied_after_updates_and_never_by_assign():
    w = jv.Variable([0.5, 0.5, 0.5], name="w", constraint=unit_interval)
    opt = jv.Optimizer(optax.sgd(1.0), [w])
    opt.apply_gradients([jnp.array([-2.0, 0.25, 2.0])])
    np.testing.assert_array_equal(w.numpy(), [1.0, 0.25, 0.0])
    w.assign([5.0, 5.0, 5.0])  # a plain assign is not projected
    np.testing.assert_array_equal(w.numpy(), [5.0, 5.0, 5.0])


def test_constraint_leaves_masked_elements_untouched_and_runs_in_jit():
    w = jv.get_variable(
        "w", initializer=[5.0, 5.0], trainable=np.array([True, False]), constraint=unit_interval
    )
    assert w.constraint is unit_interval
    opt = jv.Optimizer(optax.sgd(0.1), [w])
    jv.jit(lambda: opt.apply_gradients([jnp.ones(2)]))()
    np.testing.assert_array_equal(w.numpy(), [1.0, 5.0])


def test_constraint_changing_the_shape_is_an_error_naming_the_variable():
    w = jv.Variable([1.0, 2.0], name="w", constraint=lambda x: x.sum())
    opt = jv.Optimizer(optax.sgd(0.1), [w])
    with pytest.raises(ValueError, match="constraint of variable 'w'.*shape \\(2,\\)"):
        opt.apply_gradients([jnp.ones(2)])
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])


# -- optimiser: pairs, global_step, apply, minimize, lazy modules ---------------------------


def test_apply_gradients_pairs_list_iterator_and_global_step():
    a, b = jv.Variable(1.0, name="a"), jv.Variable(2.0, name="b")
    step = jv.Variable(0, name="global_step", trainable=False)
    opt = jv.Optimizer(optax.sgd(1.0), [a, b])
    opt.apply_gradients([(jnp.array(1.0), a), (jnp.array(1.0), b)], global_step=step)
    opt.apply_gradients(iter([(jnp.array(1.0), b)]), global_step=step)
    assert (float(a), float(b), int(step), int(opt.iterations)) == (0.0, 0.0, 2, 2)
    with pytest.raises(TypeError, match="global_step must be a jv.Variable"):
        opt.apply_gradients([(jnp.array(1.0), a)], global_step=3)  # type: ignore[arg-type]
    assert float(a) == 0.0 and int(opt.iterations) == 2  # nothing changed


def test_keras_apply_and_minimize():
    w = jv.Variable([1.0, -1.0], name="w")
    frozen = jv.Variable(3.0, name="frozen", trainable=False)
    opt = jv.Optimizer(optax.sgd(0.5), [w, frozen])
    opt.apply([jnp.array([2.0, 2.0])], [w])
    np.testing.assert_array_equal(w.numpy(), [0.0, -2.0])
    with pytest.raises(ValueError, match="1 gradients for 2 variables"):
        opt.apply([jnp.ones(2)], [w, frozen])
    step = jv.Variable(0, name="step", trainable=False)
    loss = opt.minimize(lambda: jnp.sum(w**2) + frozen, global_step=step)
    assert float(loss) == 7.0 and int(step) == 1
    np.testing.assert_array_equal(w.numpy(), [0.0, 0.0])  # w - 0.5 * 2w
    assert float(frozen) == 3.0
    w.assign([1.0, 2.0])
    jitted_loss = jv.jit(lambda: opt.minimize(lambda: jnp.sum(w**2)))()
    assert float(jitted_loss) == 5.0 and float(jnp.sum(w**2)) == 0.0
    with pytest.raises(TypeError, match="function of no arguments"):
        opt.minimize(jnp.sum(w**2))  # type: ignore[arg-type]


class Lazy(jv.Module):
    """Builds its layer on the first call, as Keras layers do."""

    def __call__(self, x):
        if not hasattr(self, "dense"):
            self.dense = Dense(x.shape[-1], 1)
        return self.dense(x)


@pytest.mark.parametrize("jit", [False, True])
def test_optimizer_over_a_module_follows_layers_built_later(jit):
    model = Lazy()
    opt = jv.Optimizer(optax.adam(0.1), model)
    assert opt.variables == {}
    x = jnp.ones((4, 3))

    def step():
        loss, grads = jv.value_and_grad(lambda: jnp.mean(model(x) ** 2), model)()
        opt.apply_gradients(grads)
        return loss

    run = jv.jit(step) if jit else step
    run()  # the first gradient builds the model (as Keras builds in tape.gradient)
    before = model.dense.w.numpy()
    run()
    assert set(opt.variables) == {"dense/w", "dense/b"}
    assert not np.array_equal(model.dense.w.numpy(), before)
    assert int(opt.iterations) == 2
    assert any(name.endswith("mu/dense/w") for name in opt.state_variables)


def test_optimizer_refuses_a_replaced_module_variable():
    model = Dense(2, 1)
    opt = jv.Optimizer(optax.sgd(0.1), model)
    model.w = jv.Variable(jnp.zeros((2, 1)), name="w")
    with pytest.raises(ValueError, match="replaced its variable 'w'"):
        opt.apply_gradients((jnp.ones((2, 1)), jnp.ones(1)))


# -- ExponentialMovingAverage --------------------------------------------------------------


def test_ema_values_names_and_collections():
    w = jv.get_variable("w", initializer=[0.0, 10.0])
    ema = jv.ExponentialMovingAverage(0.9)
    ema.apply([w])
    shadow = ema.average(w)
    assert shadow.name == "w/ExponentialMovingAverage" and shadow.trainable is False
    assert jv.default_store()["w/ExponentialMovingAverage"] is shadow
    assert jv.get_collection(jv.GraphKeys.MOVING_AVERAGE_VARIABLES) == [w]
    np.testing.assert_array_equal(shadow.numpy(), [0.0, 10.0])
    w.assign([10.0, 0.0])
    ema.apply([w])
    np.testing.assert_allclose(shadow.numpy(), [1.0, 9.0], rtol=1e-6)


def test_ema_num_updates_lowers_the_decay():
    w = jv.Variable(0.0, name="w")
    step = jv.Variable(0, name="step", trainable=False)
    ema = jv.ExponentialMovingAverage(0.999, num_updates=step)
    ema.apply([w])
    w.assign(10.0)
    ema.apply([w])  # decay min(0.999, 1/10) = 0.1: shadow = 0 + 0.9 * 10
    assert float(ema.average(w)) == pytest.approx(9.0)
    step.assign(90)
    w.assign(19.0)
    ema.apply([w])  # decay min(0.999, 91/100) = 0.91: 9 + 0.09 * 10
    assert float(ema.average(w)) == pytest.approx(9.9)


def test_ema_inside_jit_matches_eager():
    def run(jitted):
        jv.reset_default_store()
        w = jv.Variable([1.0, 2.0], name="w")
        ema = jv.ExponentialMovingAverage(0.5)

        def step(delta):
            w.assign_add(delta)
            ema.apply([w])

        fn = jv.jit(step) if jitted else step
        for i in range(3):
            fn(jnp.full(2, float(i)))
        return ema.average(w).numpy()

    np.testing.assert_allclose(run(True), run(False))


def test_swapped_evaluates_with_averages_and_restores_even_on_error():
    model = Dense(2, 1)
    ema = jv.ExponentialMovingAverage(0.0)  # decay 0: the shadow is the latest value
    ema.apply(model)
    trained = model.w.numpy()
    model.w.assign(trained + 1.0)
    with ema.swapped(model):
        np.testing.assert_array_equal(model.w.numpy(), trained)
    np.testing.assert_array_equal(model.w.numpy(), trained + 1.0)
    with pytest.raises(RuntimeError, match="boom"), ema.swapped():
        raise RuntimeError("boom")
    np.testing.assert_array_equal(model.w.numpy(), trained + 1.0)


def test_ema_errors_name_the_variable_and_change_nothing():
    count = jv.Variable(0, name="count")
    w = jv.Variable(1.0, name="w")
    ema = jv.ExponentialMovingAverage(0.9)
    with pytest.raises(TypeError, match="variable 'count' has dtype int32"):
        ema.apply([w, count])
    assert "w/ExponentialMovingAverage" not in jv.default_store()
    with pytest.raises(ValueError, match="no average of variable 'w'"):
        ema.average(w)
    with pytest.raises(ValueError, match="no average of variable 'w'"):
        with ema.swapped([w]):
            pass
    with pytest.raises(TypeError, match="takes a Variable, a Module.*holding str"):
        ema.apply({"w": "not a variable"})
    with pytest.raises(ValueError, match="decay must be in"):
        jv.ExponentialMovingAverage(1.5)


# -- sparse updates, read_value ------------------------------------------------------------


@pytest.mark.parametrize(
    "method, numpy_update",
    [
        ("scatter_update", lambda a, i, u: a.__setitem__(i, u)),
        ("scatter_add", lambda a, i, u: np.add.at(a, i, u)),
        ("scatter_sub", lambda a, i, u: np.subtract.at(a, i, u)),
        ("scatter_max", lambda a, i, u: np.maximum.at(a, i, u)),
        ("scatter_min", lambda a, i, u: np.minimum.at(a, i, u)),
    ],
)
@pytest.mark.parametrize("jit", [False, True])
def test_scatter_methods_match_numpy(method, numpy_update, jit):
    start = np.arange(12, dtype=np.float32).reshape(4, 3)
    v = jv.Variable(start, name="table")
    indices, updates = np.array([3, 0]), np.array([[5.0, -1.0, 20.0], [1.0, 1.0, 1.0]])
    call = (lambda: getattr(v, method)(indices, updates)) if not jit else None
    out = jv.jit(lambda i, u: getattr(v, method)(i, u))(indices, updates) if jit else call()
    expected = start.copy()
    numpy_update(expected, indices, updates.astype(np.float32))
    np.testing.assert_array_equal(v.numpy(), expected)
    assert out is v


@pytest.mark.parametrize("jit", [False, True])
def test_scatter_nd_methods(jit):
    v = jv.Variable(np.zeros((2, 3), np.int32), name="grid")
    apply = jv.jit(lambda f: f()) if jit else (lambda f: f())
    apply(lambda: v.scatter_nd_update([[0, 1], [1, 2]], [7, 8]))
    apply(lambda: v.scatter_nd_add([[0, 1]], [2]))
    apply(lambda: v.scatter_nd_sub([[1]], [[1, 1, 1]]))  # a whole row
    np.testing.assert_array_equal(v.numpy(), [[0, 9, 0], [-1, -1, 7]])


def test_sparse_read_and_negative_indices():
    v = jv.Variable([[1, 2], [3, 4], [5, 6]], name="v")
    assert v.sparse_read([2, -3]).tolist() == [[5, 6], [1, 2]]
    assert jv.jit(lambda i: v.sparse_read(i))(jnp.array([1])).tolist() == [[3, 4]]
    v.scatter_update([-1], [[0, 0]])
    assert v.numpy().tolist() == [[1, 2], [3, 4], [0, 0]]


def test_scatter_errors_name_the_variable_and_change_nothing():
    v = jv.Variable(np.zeros((3, 2), np.int32), name="ints")
    with pytest.raises(TypeError, match="'ints'"):
        v.scatter_update([0], [[1.5, 2.5]])  # float into int: the assign rule
    with pytest.raises(ValueError, match="'ints'.*updates of shape \\(1, 3\\)"):
        v.scatter_add([0], [[1, 2, 3]])
    with pytest.raises(IndexError, match="'ints'.*index 3 is out of range"):
        v.scatter_add([3], [[1, 1]])
    with pytest.raises(IndexError, match="'ints'.*index 5 .*axis 1"):
        v.scatter_nd_update([[0, 5]], [1])
    with pytest.raises(TypeError, match="'ints'.*indices must be integers"):
        v.scatter_update([0.0], [[1, 1]])
    with pytest.raises(ValueError, match="'ints'.*indices must have shape"):
        v.scatter_nd_update([[0, 0, 0]], [1])
    np.testing.assert_array_equal(v.numpy(), np.zeros((3, 2)))


def test_read_value_false_returns_none():
    v = jv.Variable(1.0, name="v")
    assert v.assign(2.0, read_value=False) is None
    assert v.assign_add(1.0, read_value=False) is None
    assert v.assign_sub(0.5, read_value=False) is None
    assert float(v) == 2.5 and v.assign(1.0) is v


# -- jv.jit: untraceable arguments are static --------------------------------------------------


class Mode(enum.Enum):
    TRAIN = 1
    EVAL = 2


def test_bool_str_enum_and_function_arguments_are_static():
    counter = jv.Variable(0.0, name="counter")
    traces = []

    @jv.jit
    def step(x, training=True, mode=Mode.TRAIN, tag="a", act=jnp.tanh):
        traces.append((training, mode, tag))
        if training and mode is Mode.TRAIN:
            counter.assign_add(1.0)
        return act(x) * len(tag)

    x = jnp.ones(2)
    step(x, training=True)
    runs = len(traces)
    step(x + 1, training=True)
    assert len(traces) == runs  # same statics: no retrace
    np.testing.assert_allclose(step(x, False, Mode.EVAL, "abc", jnp.sin), jnp.sin(x) * 3)
    assert float(counter) == 2.0 and len(traces) > runs
    assert step(x, training=False, tag="xy").shape == (2,)


def test_methods_of_plain_classes_key_by_identity_and_are_held_weakly():
    traces = []

    class Scaler:
        def __init__(self, scale):
            self.scale = scale
            self.calls = jv.Variable(0, name="calls")

        @jv.jit
        def __call__(self, x):
            traces.append(1)
            self.calls.assign_add(1)
            return x * self.scale

    a, b = Scaler(2.0), Scaler(3.0)
    assert float(a(jnp.ones(()))) == 2.0 and float(b(jnp.ones(()))) == 3.0
    runs = len(traces)
    assert float(a(jnp.ones(()))) == 2.0 and len(traces) == runs
    assert int(a.calls) == 2 and int(b.calls) == 1
    cache = Scaler.__call__._jitted._cache
    assert len(cache) == 2
    gone = weakref.ref(a)
    del a
    gc.collect()
    assert gone() is None and len(cache) == 1  # compiled code held it weakly


def test_unhashable_untraceable_arguments_are_a_clear_error():
    @jv.jit
    def f(x, options):
        return x

    with pytest.raises(TypeError, match="jv.jit\\(f\\).*neither traced.*nor kept as a static"):
        f(jnp.ones(()), bytearray(b"ab"))  # not a pytree, not weakly referable, not hashable
