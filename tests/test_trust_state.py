"""Optimiser state only for what trains, ensemble masks, jv.vmap keywords, index errors.

API.md section 5 (optimisers), section 9 (vmap and ensembles) and section 12
(every deliberate error is a jv.JaxvarsError).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from models import MLP, Dense

import jaxvars as jv

X = jnp.asarray(np.random.default_rng(0).normal(size=(16, 3)), jnp.float32)
Y = jnp.sum(X, axis=1, keepdims=True)


class Counted(jv.Module):
    """A layer with the integer and float statistics real models keep beside weights."""

    def __init__(self):
        super().__init__()
        self.dense = Dense(3, 1)
        self.count = jv.Variable(0, name="count", trainable=False)  # BatchNorm's count
        self.moving_mean = jv.Variable(jnp.zeros(3), name="moving_mean", trainable=False)

    def __call__(self, x):
        self.count.assign_add(1)
        self.moving_mean.assign(0.9 * self.moving_mean + 0.1 * jnp.mean(x, axis=0))
        return self.dense(x)


def loss_of(model):
    return lambda: jnp.mean((model(X) - Y) ** 2)


def state_names(opt):
    return sorted(opt.checkpoint_variables())


# -- item 7: state only for trainable floating-point variables ---------------------------------


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize(
    ("tx", "names"),
    [
        (
            optax.adam(0.1),
            ["0/count", "0/mu/dense/b", "0/mu/dense/w", "0/nu/dense/b", "0/nu/dense/w"],
        ),
        (optax.sgd(0.1, momentum=0.9), ["0/trace/dense/b", "0/trace/dense/w"]),
    ],
    ids=["adam", "momentum"],
)
def test_int_and_frozen_variables_get_no_state_and_stay_untouched(tx, names, jit):
    model = Counted()
    opt = jv.Optimizer(tx, model)
    assert state_names(opt) == [*names, "iterations"]
    mean_before = model.moving_mean.numpy()
    w_before = model.dense.w.numpy()

    def step():
        opt.apply_gradients(jv.grad(loss_of(model), model)())

    run = jv.jit(step) if jit else step
    for _ in range(3):
        run()
    assert model.count.dtype == np.int32 and int(model.count) == 3  # only the model's writes
    moving_mean = mean_before
    for _ in range(3):
        moving_mean = 0.9 * moving_mean + 0.1 * np.mean(np.asarray(X), axis=0)
    np.testing.assert_allclose(model.moving_mean.numpy(), moving_mean, rtol=1e-6)
    assert not np.array_equal(model.dense.w.numpy(), w_before)
    assert int(opt.iterations) == 3


def test_an_integer_variable_marked_trainable_gets_no_state_and_is_not_touched():
    w = jv.Variable([1.0, 2.0], name="w")
    step = jv.Variable(7, name="pruning_step")  # trainable=True by default, but an int
    with jv.Store():
        opt = jv.Optimizer(optax.adamw(0.1, weight_decay=0.5), {"w": w, "step": step})
        assert state_names(opt) == ["0/count", "0/mu/w", "0/nu/w", "iterations"]
        opt.apply_gradients({"w": jnp.ones(2)})
        jv.jit(lambda: opt.apply_gradients({"w": jnp.ones(2)}))()
        opt.apply_gradients([(None, w), (jnp.zeros((), jax.dtypes.float0), step)])  # TF's style
    assert int(step) == 7 and step.dtype == np.int32
    assert int(opt.iterations) == 3
    tx, params = optax.adamw(0.1, weight_decay=0.5), jnp.array([1.0, 2.0])
    state = tx.init(params)
    for g in [jnp.ones(2), jnp.ones(2), jnp.zeros(2)]:  # None counts as a zero gradient
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(w.numpy(), params, rtol=1e-6)


def test_a_variable_frozen_after_the_optimizer_was_built_loses_its_state():
    a = jv.Variable([1.0, 2.0], name="a")
    b = jv.Variable([3.0], name="b")
    with jv.Store():
        opt = jv.Optimizer(optax.adam(0.1), [a, b])
        assert "0/mu/1" in state_names(opt)
        opt.apply_gradients([jnp.ones(2), jnp.ones(1)])
        mu_a = opt.state_variables["optimizer/0/mu/0"]
        b.trainable = False
        b_before = b.numpy()
        opt.apply_gradients([jnp.ones(2), jnp.ones(1)])
    assert state_names(opt) == ["0/count", "0/mu/0", "0/nu/0", "iterations"]
    assert opt.state_variables["optimizer/0/mu/0"] is mu_a  # the others keep theirs
    assert np.array_equal(b.numpy(), b_before)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_a_variable_made_trainable_later_gets_fresh_state_never_stale_state(jit):
    """Momentum: a fresh trace makes the first step exactly -lr * g."""
    a = jv.Variable([1.0, 2.0], name="a")
    b = jv.Variable([3.0], name="b", trainable=False)
    with jv.Store():
        opt = jv.Optimizer(optax.sgd(0.5, momentum=0.9), [a, b])
        assert state_names(opt) == ["0/trace/0", "iterations"]
        step = jv.jit(opt.apply_gradients) if jit else opt.apply_gradients
        g = [jnp.ones(2), jnp.ones(1)]
        for _ in range(3):
            step(g)
        b.trainable = True
        step(g)
        np.testing.assert_allclose(b.numpy(), [2.5])  # 3 - 0.5 * 1: a fresh trace
        step(g)
        np.testing.assert_allclose(b.numpy(), [2.5 - 0.5 * 1.9])  # then it carries on
        b.trainable = False
        step(g)
        b.trainable = True
        before = b.numpy()
        step(g)  # the trace it had when frozen is not reused
        np.testing.assert_allclose(b.numpy(), before - 0.5)
    # a trained all along, as optax alone trains it
    params, state = jnp.array([1.0, 2.0]), optax.sgd(0.5, momentum=0.9).init(jnp.zeros(2))
    for _ in range(7):
        updates, state = optax.sgd(0.5, momentum=0.9).update(jnp.ones(2), state)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(a.numpy(), params, rtol=1e-6)


def test_unfreezing_a_variable_the_jitted_step_never_reads_retraces_once():
    """Weight decay moves a variable the loss ignores, once it is trainable."""

    class WithSpare(jv.Module):
        def __init__(self):
            super().__init__()
            self.dense = Dense(3, 1)
            self.spare = jv.Variable([1.0, 1.0], name="spare", trainable=False)

        def __call__(self, x):
            return self.dense(x)

    model = WithSpare()
    with jv.Store():
        opt = jv.Optimizer(optax.adamw(0.1, weight_decay=0.5), model)
    runs = []

    @jv.jit
    def step():
        runs.append(1)
        opt.apply_gradients(jv.grad(loss_of(model), model)())

    step()
    step()
    traces = len(runs)
    np.testing.assert_array_equal(model.spare.numpy(), [1.0, 1.0])
    model.spare.trainable = True
    step()
    assert not np.array_equal(model.spare.numpy(), [1.0, 1.0])
    step()
    # The change takes a trace that makes the adam state of `spare` and one that
    # uses it as an input; none after.
    assert len(runs) == traces + 2


def test_masked_variables_keep_their_state_when_the_mask_changes():
    w = jv.Variable([1.0, 2.0, 3.0], name="w", trainable=np.array([True, False, True]))
    with jv.Store():
        opt = jv.Optimizer(optax.adam(0.1), [w])
        assert state_names(opt) == ["0/count", "0/mu/0", "0/nu/0", "iterations"]
        opt.apply_gradients([jnp.ones(3)])
        mu = opt.state_variables["optimizer/0/mu/0"]
        w.trainable = np.array([False, True, True])
        opt.apply_gradients([jnp.ones(3)])
    assert opt.state_variables["optimizer/0/mu/0"] is mu
    assert float(w[0]) != 1.0 and float(w[1]) != 2.0


def test_checkpoint_keys_follow_the_trainable_settings_and_restore_into_fresh_ones(tmp_path):
    path = str(tmp_path / "ckpt.safetensors")
    jv.random.set_seed(1)
    model = Counted()
    opt = jv.Optimizer(optax.adam(0.1), model)
    opt.apply_gradients(jv.grad(loss_of(model), model)())
    model.dense.b.trainable = False  # frozen after a step, before saving
    jv.save(path, {"model": model, "opt": opt})
    saved = {k: v.numpy() for k, v in opt.checkpoint_variables().items()}
    assert "0/mu/dense/b" not in saved and "0/mu/dense/w" in saved
    with jv.Store():
        jv.random.set_seed(2)
        fresh = Counted()
        fresh.dense.b.trainable = False
        fresh_opt = jv.Optimizer(optax.adam(0.1), fresh)
        jv.restore(path, {"model": fresh, "opt": fresh_opt})
    restored = {k: v.numpy() for k, v in fresh_opt.checkpoint_variables().items()}
    assert restored.keys() == saved.keys()
    for key in saved:
        np.testing.assert_array_equal(restored[key], saved[key])
    assert int(fresh.count) == int(model.count) == 1


def test_minimize_differentiates_only_what_the_optimizer_updates():
    w = jv.Variable([1.0, 2.0], name="w")
    step = jv.Variable(0, name="step")  # an int, trainable by default
    with jv.Store():
        opt = jv.Optimizer(optax.sgd(0.5), [w, step])
        loss = opt.minimize(lambda: jnp.sum(w * w) + step)
    assert float(loss) == 5.0 and int(step) == 0
    np.testing.assert_array_equal(w.numpy(), [0.0, 0.0])


# -- item 18: an ensemble's masks stack with its variables -------------------------------------


def masked_member():
    """A variable whose value shows its own (random) mask: 1.0 where trainable."""
    mask = np.asarray(jv.random.uniform((2, 3)) > 0.5)
    return jv.Variable(mask.astype(np.float32), name="v", trainable=mask)


@pytest.mark.parametrize("axis", [0, 1])
def test_ensemble_masks_stack_on_the_variable_axis_and_gradients_follow_them(axis):
    jv.random.set_seed(3)
    v = jv.vmap(masked_member, axis_size=4, variable_axes=axis)()
    assert v.shape == ((4, 2, 3) if axis == 0 else (2, 4, 3))
    expected = v.numpy() > 0.5
    assert len({np.take(expected, i, axis).tobytes() for i in range(4)}) > 1  # members differ
    assert isinstance(v.trainable, jax.Array) and v.trainable.dtype == bool
    np.testing.assert_array_equal(v.trainable, expected)
    grads = jv.grad(lambda: jnp.sum(v * 2.0 + 1.0), v)()
    np.testing.assert_array_equal(grads, np.where(expected, 2.0, 0.0))
    before = v.numpy()
    with jv.Store():
        opt = jv.Optimizer(optax.adamw(0.1, weight_decay=0.5), [v])
    opt.apply_gradients([jnp.ones(v.shape)])
    after = v.numpy()
    assert np.array_equal(after[~expected], before[~expected])  # bit-identical
    assert not np.any(after[expected] == before[expected])


def test_ensemble_bool_trainable_stays_a_bool_and_mixed_members_make_a_mask():
    ensemble = jv.vmap(lambda: MLP([2, 3, 1]), axis_size=3, variable_axes=0)()
    assert all(v.trainable is True for v in ensemble.variables)
    built = iter([True, False, True])
    frozen = jv.vmap(
        lambda: jv.Variable(jnp.zeros(2), name="f", trainable=False), axis_size=3, variable_axes=1
    )()
    assert frozen.trainable is False
    mixed = jv.vmap(
        lambda: jv.Variable(jnp.zeros(2), name="m", trainable=next(built)),
        axis_size=3,
        variable_axes=1,
    )()
    np.testing.assert_array_equal(mixed.trainable, [[True, False, True]] * 2)


# -- item 25: jv.vmap takes keyword arguments, as jax.vmap does --------------------------------


def test_vmap_maps_keyword_arguments_over_axis_0_like_jax_vmap():
    offset = jv.Variable(1.0, name="offset")

    def f(x, *, scale, shift=None):
        return x * scale["a"] + offset + (0.0 if shift is None else shift)

    xs, scales = jnp.arange(3.0), {"a": jnp.array([1.0, 2.0, 3.0])}
    got = jv.vmap(f)(xs, scale=scales)
    plain = jax.vmap(lambda x, *, scale: x * scale["a"] + 1.0)(xs, scale=scales)
    np.testing.assert_array_equal(got, plain)
    got = jv.jit(lambda: jv.vmap(f, in_axes=(None,))(2.0, scale=scales, shift=xs))()
    np.testing.assert_array_equal(got, 2.0 * scales["a"] + 1.0 + xs)
    with pytest.raises(ValueError, match="axis 0"):
        jv.vmap(f)(xs, scale={"a": jnp.float32(1.0)})  # a keyword is mapped, as in jax
    with pytest.raises(ValueError, match="one entry per positional argument.*got 2 entries for 1"):
        jv.vmap(f, in_axes=(0, 0))(xs, scale=scales)


def test_vmap_keyword_arguments_reach_split_variables():
    totals = jv.Variable(jnp.zeros(3), name="totals")

    def add(x, *, weight):
        totals.assign_add(x * weight)

    jv.vmap(add, variable_axes={totals: 0})(jnp.arange(3.0), weight=jnp.array([2.0, 2.0, 2.0]))
    np.testing.assert_array_equal(totals.numpy(), [0.0, 2.0, 4.0])


# -- item 27: an index out of range is a JaxvarsError and an IndexError -------------------------


@pytest.mark.parametrize(
    "op",
    [
        lambda v: v.scatter_update([3], [[0.0, 0.0]]),
        lambda v: v.scatter_add([-4], [[1.0, 1.0]]),
        lambda v: v.scatter_nd_update([[0, 2]], [1.0]),
        lambda v: v.sparse_read([5]),
    ],
    ids=["scatter_update", "scatter_add", "scatter_nd_update", "sparse_read"],
)
def test_an_index_out_of_range_is_a_jaxvars_error_and_an_index_error(op):
    v = jv.Variable([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], name="table")
    with pytest.raises(
        jv.JaxvarsError, match=r"on variable 'table' \(shape \(3, 2\)\): index"
    ) as e:
        op(v)
    assert isinstance(e.value, IndexError)
    assert "out of range for axis" in str(e.value) and "is unchanged" in str(e.value)
    np.testing.assert_array_equal(v.numpy(), [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])


def test_grad_over_a_module_with_an_integer_counter_gives_it_zeros():
    class Counted(jv.Module):
        def __init__(self):
            super().__init__()
            self.w = jv.Variable(2.0, name="w")
            self.steps = jv.Variable(0, name="steps")  # trainable=True by default, as in TF

        def __call__(self, x):
            self.steps.assign_add(1)
            return self.w * x

    model = Counted()
    g_w, g_steps = jv.grad(lambda: model(3.0) ** 2, model)()
    assert float(g_w) == 36.0
    assert g_steps.dtype == model.steps.dtype and int(g_steps) == 0
    assert int(model.steps) == 1
    g = jv.jit(jv.grad(lambda: model(3.0) ** 2, model.steps))()
    assert int(g) == 0 and int(model.steps) == 2
