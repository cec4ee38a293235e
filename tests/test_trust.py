"""Issue 19 (trust, round 3): silent wrong results and refusals found by real ports.

Each test reproduces one confirmed defect; see the README sections on jv.jit,
Modules and the lifted transforms for the behaviour asserted.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvars as jv


def counting(fn):
    """``fn`` with a list counting how often its Python ran (traces)."""
    calls = []

    def counted(*args, **kwargs):
        calls.append(None)
        return fn(*args, **kwargs)

    return counted, calls


# -- 1. a Module's plain attributes are part of what jv.jit compiled ---------------------


class Dropoutish(jv.Module):
    def __init__(self):
        super().__init__()
        self.w = jv.Variable(2.0, name="w")
        self.deterministic = False
        self.rate = 0.5
        self.mode = "train"

    def __call__(self, x):
        return x * self.w if self.deterministic else x * self.rate


def test_a_flag_flipped_on_a_module_argument_retraces_once():
    layer = Dropoutish()
    body, traces = counting(lambda m, x: m(x))
    step = jv.jit(body)
    assert float(step(layer, 3.0)) == 1.5
    layer.deterministic = True
    assert float(step(layer, 3.0)) == 6.0
    n = len(traces)
    assert float(step(layer, 3.0)) == 6.0
    layer.deterministic = True  # the same values: still a cache hit
    layer.rate = float("0.5")  # an equal float, not the same object
    layer.mode = "".join(["tr", "ain"])
    assert float(step(layer, 3.0)) == 6.0
    assert len(traces) == n


def test_a_float_rate_on_a_closed_over_module_retraces():
    layer = Dropoutish()
    step = jv.jit(lambda x: layer(x))
    assert float(step(4.0)) == 2.0
    layer.rate = 0.25
    assert float(step(4.0)) == 1.0


def test_a_submodule_attribute_read_by_its_parent_retraces():
    class Parent(jv.Module):
        def __init__(self):
            super().__init__()
            self.inner = Dropoutish()

        def __call__(self, x):
            return x * self.inner.rate  # no method of inner runs

    model = Parent()
    step = jv.jit(lambda m, x: m(x))
    assert float(step(model, 2.0)) == 1.0
    model.inner.rate = 2.0
    assert float(step(model, 2.0)) == 4.0


def test_an_unrelated_module_change_does_not_retrace():
    used, other = Dropoutish(), Dropoutish()
    body, traces = counting(lambda m, x: m(x))
    step = jv.jit(body)
    step(used, 1.0)
    n = len(traces)
    other.rate = 0.1
    step(used, 1.0)
    assert len(traces) == n


# -- 2. a traced trainable mask is refused where it is set -------------------------------


def test_a_traced_mask_set_inside_jit_is_an_error_at_that_line():
    w = jv.Variable(jnp.arange(4.0), name="prune/w")

    @jv.jit
    def prune():
        w.trainable = jnp.abs(w.value) > 1
        return w * 1

    with pytest.raises(
        TypeError, match=r"trainable of variable 'prune/w' was set to a mask tr"
    ) as e:
        prune()
    assert "Compute the mask outside the jitted function" in str(e.value)
    assert "keep the mask in a variable and multiply" in str(e.value)
    assert w.trainable is True
    # The traceback ends at the user's line.
    assert e.traceback[-1].path == __import__("pathlib").Path(__file__)


# -- 3. a variable created inside jv.jit starts from the value the step computed --------


def test_ema_created_in_the_jitted_step_starts_from_the_updated_weight():
    w = jv.Variable(1.0, name="w")
    ema = jv.ExponentialMovingAverage(0.7)

    @jv.jit
    def train():
        w.assign(0.5)
        ema.apply([w])

    train()
    assert float(ema.average(w)) == 0.5  # TF and eager give 0.5; before: 0.85
    w.assign(1.0)
    train()
    assert float(ema.average(w)) == pytest.approx(0.5)


def test_tf_function_pattern_creates_the_variable_from_the_first_call_arguments():
    class Lazy(jv.Module):
        def __init__(self):
            super().__init__()
            self.v = None

        def __call__(self, x):
            if self.v is None:
                self.v = jv.Variable(x, name="v", trainable=x > 0)
            self.v.assign_add(1.0)
            return self.v * 2

    model = Lazy()
    step = jv.jit(lambda x: model(x))
    np.testing.assert_array_equal(step(jnp.array([5.0, -1.0])), [12.0, 0.0])
    np.testing.assert_array_equal(model.v.numpy(), [6.0, 0.0])
    np.testing.assert_array_equal(model.v.trainable, [True, False])
    np.testing.assert_array_equal(step(jnp.array([9.0, 9.0])), [14.0, 2.0])


def test_get_variable_with_a_constant_initializer_inside_jit():
    @jv.jit
    def f(x):
        b = jv.get_variable("b", initializer=jnp.full(2, 3.0))
        return b + x

    np.testing.assert_array_equal(f(1.0), [4.0, 4.0])
    np.testing.assert_array_equal(jv.default_store()["b"].numpy(), [3.0, 3.0])


def test_a_traced_initial_value_inside_a_nested_transform_names_the_fix():
    @jv.jit
    def f(x):
        return jv.cond(x > 0, lambda: jv.Variable(x * 2, name="inner") * 1, lambda: x)

    with pytest.raises(TypeError, match="Variable 'inner' is created from a value traced"):
        f(1.0)
    assert "inner" not in jv.default_store()


# -- 4. an eager cond / switch branch that raises changes nothing -------------------------


@pytest.mark.parametrize("which", ["cond", "switch"])
def test_a_raising_eager_branch_leaves_every_variable_unchanged(which):
    count = jv.Variable(0, name="count")
    other = jv.Variable(1.0, name="other")

    def bad():
        count.assign(7)
        other.assign_add(1.0)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        if which == "cond":
            jv.cond(True, bad, lambda: None)
        else:
            jv.switch(0, [bad, lambda: None])
    assert int(count) == 0 and float(other) == 1.0
    jv.cond(True, lambda: count.assign(3) * 0, lambda: count * 0)
    assert int(count) == 3  # a branch that returns still assigns


# -- 8. get_variable in an eager scan / while_loop body is created once -------------------


def test_get_variable_in_an_eager_scan_body_is_created_once():
    def cell(h, x):
        w = jv.get_variable("rnn/w", shape=(), initializer=jax.nn.initializers.ones)
        return h * w + x, h

    h, ys = jv.scan(cell, 1.0, jnp.arange(3.0))
    assert float(h) == 4.0
    assert [v.name for v in jv.global_variables()] == ["rnn/w"]


def test_get_variable_in_an_eager_while_loop_body_is_created_once():
    def body(i):
        jv.get_variable("loop/w", shape=(), initializer=jax.nn.initializers.zeros)
        return i + 1

    assert int(jv.while_loop(lambda i: i < 3, body, 0)) == 3
    assert [v.name for v in jv.global_variables()] == ["loop/w"]
    # A second, separate call is another function run: TF's "already exists".
    with pytest.raises(ValueError, match="Variable 'loop/w' already exists"):
        jv.while_loop(lambda i: i < 3, body, 0)


# -- 24. jv.cond on a Variable flag inside jv.jit ----------------------------------------


def test_cond_takes_a_variable_flag_inside_jit():
    flag = jv.Variable(True, name="flag")
    step = jv.jit(lambda: jv.cond(flag, lambda: 1.0, lambda: 2.0))
    assert float(step()) == 1.0
    flag.assign(False)
    assert float(step()) == 2.0


# -- 25. keyword arguments through jv.remat ------------------------------------------------


def test_remat_takes_keyword_arguments():
    w = jv.Variable(3.0, name="w")
    layer = jv.remat(lambda x, scale=1.0: jnp.sin(x * w) * scale)
    assert float(layer(1.0, scale=2.0)) == pytest.approx(2 * np.sin(3.0))
    g = jv.grad(lambda: layer(1.0, scale=2.0), w)()
    assert float(g) == pytest.approx(2 * np.cos(3.0))


# -- 29. a stacked variable of the wrong depth names the variable ------------------------


def test_scan_with_a_stacked_variable_of_the_wrong_depth_names_it():
    w = jv.Variable(jnp.ones((3, 2)), name="stack/w")

    with pytest.raises(ValueError, match=r"variable 'stack/w' of shape \(3, 2\) is split along "):
        jv.scan(lambda h, x: (h * w, None), jnp.ones(2), jnp.ones(4), variable_axes={"stack/": 0})
    with pytest.raises(ValueError, match="needs 4 slices there, one per iteration; it has 3"):
        jv.scan(lambda h, x: (h * w, None), jnp.ones(2), length=4, variable_axes={w: 0})


# -- 9, 23. inside jv.eval_shape: reads give shapes, masks work after restore -------------


def test_a_variable_made_and_read_inside_eval_shape_gives_shapes():
    def build():
        v = jv.Variable(jv.random.normal((3,)), name="v9")
        return v * 2, v

    doubled, v = jv.eval_shape(build)
    assert doubled.shape == (3,) and doubled.dtype == jnp.float32
    assert v.is_abstract
    with pytest.raises(ValueError, match="Variable 'v9' is abstract"):
        v + 1  # outside eval_shape it still has no value


def test_abstract_init_restore_train_with_a_mask_given_at_creation(tmp_path):
    class Net(jv.Module):
        def __init__(self):
            super().__init__()
            self.w = jv.Variable(jnp.ones(4), name="w", trainable=jnp.arange(4) < 2)

    trained = Net()
    trained.w.assign(jnp.array([1.0, 2.0, 3.0, 4.0]))
    jv.save(tmp_path / "ckpt", trained)
    abstract = jv.eval_shape(Net)
    assert isinstance(abstract.w.trainable, jax.Array)
    np.testing.assert_array_equal(abstract.w.trainable, [True, True, False, False])
    jv.restore(tmp_path / "ckpt", abstract)
    g = jv.grad(lambda: (abstract.w * abstract.w).sum(), abstract.w)()
    np.testing.assert_array_equal(g, [2.0, 4.0, 0.0, 0.0])
    assert "mask" in repr(abstract.w)
    abstract.summary(print_fn=lambda line: None)
    assert "<table" in abstract._repr_html_()


# -- 6. a committed initial value keeps its placement -------------------------------------


def test_a_variable_keeps_the_device_its_initial_value_was_committed_to():
    x = jax.device_put(jnp.ones(3), jax.devices()[3])
    v = jv.Variable(x, name="v6")
    assert v.device == jax.devices()[3] and v.value.committed
    v.assign(jnp.zeros(3))  # assign keeps the variable's own placement
    assert v.device == jax.devices()[3]
    assert "cpu:3" in repr(v) and "(uncommitted)" not in repr(v)
    u = jv.Variable(jnp.ones(3), name="u")  # uncommitted stays uncommitted
    assert not u.value.committed


def test_a_variable_keeps_the_mesh_sharding_of_its_initial_value():
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data", "model"))
    x = jax.device_put(jnp.arange(32.0).reshape(4, 8), sharding)
    v = jv.Variable(x, name="sharded")
    assert v.sharding == sharding and v.device is None
    assert {s.data.shape for s in v.value.addressable_shards} == {(2, 2)}
    moved = jv.Variable(x, name="moved", device=jax.devices()[1])  # an explicit placement wins
    assert moved.device == jax.devices()[1]
    np.testing.assert_array_equal(moved.numpy(), x)


# -- 13, 15, 28. tracebacks end at the user's line; bool() on a variable explained ------


def last_frame(excinfo):
    """The innermost frame of an error's traceback, as Python prints it."""
    return __import__("traceback").extract_tb(excinfo.value.__traceback__)[-1]


def no_jaxvars_frames(excinfo):
    frames = __import__("traceback").extract_tb(excinfo.value.__traceback__)
    return not [f for f in frames if "/jaxvars/" in f.filename]


def test_an_eager_assign_error_ends_at_the_users_line():
    v = jv.Variable(jnp.ones(3), name="v")
    with pytest.raises(ValueError, match="Cannot assign to variable 'v'") as e:
        v.assign(jnp.ones(4))
    assert last_frame(e).filename == __file__ and "v.assign(jnp.ones(4))" in last_frame(e).line
    assert no_jaxvars_frames(e)
    for method in (v.assign_add, v.assign_sub):
        with pytest.raises(ValueError) as e:
            method(jnp.ones(4))
        assert last_frame(e).filename == __file__ and no_jaxvars_frames(e)
    with pytest.raises(ValueError) as e:
        v[0] = jnp.ones(5)
    assert last_frame(e).filename == __file__ and no_jaxvars_frames(e)


def test_bool_of_a_variable_inside_jit_names_it_and_the_fix():
    threshold = jv.Variable(1.0, name="threshold")

    @jv.jit
    def f(x):
        if threshold > 0:
            return x
        return -x

    with pytest.raises(
        TypeError, match=r"variable 'threshold' \(`threshold`\) holds a traced"
    ) as e:
        f(1.0)
    assert "jv.cond(pred, true_fn, false_fn) or jnp.where" in str(e.value)
    assert last_frame(e).line == "if threshold > 0:" and no_jaxvars_frames(e)


def test_bool_of_a_module_variable_inside_jit_names_the_attribute():
    model = Dropoutish()

    @jv.jit
    def f(x):
        return x if model.w > 0 else -x

    with pytest.raises(TypeError, match=r"variable 'dropoutish/w' \(`model.w`\)"):
        f(1.0)


def test_a_concretization_error_not_about_a_variable_is_jaxs_own():
    @jv.jit
    def f(x):
        return 1 if x > 0 else 0

    with pytest.raises(jax.errors.TracerBoolConversionError):
        f(1.0)


@pytest.mark.parametrize("where", ["scan", "vmap", "vmap-lane", "cond_fun", "remat", "cond"])
def test_errors_in_lifted_bodies_end_in_user_code(where):
    v = jv.Variable(0.0, name="v")

    def buggy(*_):
        return undefined_name  # noqa: F821

    with pytest.raises((NameError, ValueError)) as e:
        if where == "scan":
            jv.scan(lambda h, x: (buggy(), None), 0.0, jnp.ones(2))
        elif where == "vmap":
            jv.vmap(lambda x: buggy())(jnp.ones(2))
        elif where == "vmap-lane":  # a per-lane assignment to a broadcast variable
            jv.vmap(lambda x: v.assign(x))(jnp.ones(2))
        elif where == "cond_fun":
            jv.while_loop(lambda i: v.assign(1.0) > 0, lambda i: i, 0)
        elif where == "remat":
            jv.remat(buggy)(1.0)
        else:
            jv.cond(True, buggy, buggy)
    assert last_frame(e).filename == __file__, last_frame(e)
    assert no_jaxvars_frames(e)


# -- 17. errors name the Module attribute path of unnamed variables -----------------------


class BatchNormish(jv.Module):
    def __init__(self):
        super().__init__()
        self.running_var = jv.Variable(jnp.ones(3))


class Net(jv.Module):
    def __init__(self):
        super().__init__()
        self.bn = BatchNormish()
        self.blocks = [BatchNormish()]


def test_errors_about_a_module_variable_name_its_attribute_path():
    net = Net()
    with pytest.raises(ValueError, match=r"'net/batch_normish/Variable' \(net\.bn\.running_var\)"):
        net.bn.running_var.assign(jnp.ones(4))
    with pytest.raises(TypeError, match=r"\(net\.blocks\[0\]\.running_var\)"):
        net.blocks[0].running_var.assign("x")
    with pytest.raises(ValueError, match=r"\(net\.bn\.running_var\) must be a bool"):
        net.bn.running_var.trainable = jnp.ones(2, bool)
    np.testing.assert_array_equal(net.bn.running_var.numpy(), np.ones(3))
    loose = jv.Variable(jnp.ones(3), name="loose")
    with pytest.raises(ValueError, match=r"variable 'loose': the variable"):
        loose.assign(jnp.ones(4))


# -- 3 (continued): the creating call runs as it would eagerly ----------------------------


def run_eager_and_jitted(make, call, times=3):
    """Run ``call(model)`` eagerly and jitted on fresh models from ``make``; both results."""
    results = {}
    for mode in ("eager", "jit"):
        jv.reset_default_store()
        jv.random.set_seed(0)
        model = make()
        step = jv.jit(call) if mode == "jit" else call
        results[mode] = [jax.tree_util.tree_map(np.asarray, step(model)) for _ in range(times)]
        results[mode].append({k: v.numpy() for k, v in model.named_variables().items()})
    return results["eager"], results["jit"]


def test_a_variable_made_from_one_made_in_the_same_call_matches_eager():
    class Two(jv.Module):
        def __call__(self, x):
            if not hasattr(self, "a"):
                self.a = jv.Variable(x + 1.0, name="a")
                self.b = jv.Variable(self.a * 3.0, name="b")
            self.a.assign_add(1.0)
            return self.b + self.a

    eager, jitted = run_eager_and_jitted(Two, lambda m: m(jnp.ones(2)))
    jax.tree_util.tree_map(np.testing.assert_array_equal, eager, jitted)
    np.testing.assert_array_equal(jitted[-1]["b"], [6.0, 6.0])


def test_a_random_initial_value_made_in_the_step_draws_as_eagerly():
    class Dense(jv.Module):
        def __call__(self, x):
            if not hasattr(self, "w"):
                self.w = jv.Variable(jv.random.normal((2, 2)), name="w")
            return x @ self.w, jv.random.normal((2, 2))  # dropout-like noise

    eager, jitted = run_eager_and_jitted(Dense, lambda m: m(jnp.eye(2)))
    jax.tree_util.tree_map(np.testing.assert_array_equal, eager, jitted)
    assert not np.array_equal(jitted[0][1], jitted[-1]["w"])  # the noise is a new draw


def test_a_call_that_raises_after_creating_leaves_no_stand_in_value():
    class Acc(jv.Module):
        def __init__(self):
            super().__init__()
            self.v = None

        def __call__(self, x, fail):
            if self.v is None:
                self.v = jv.Variable(x, name="acc")
            if fail:
                raise RuntimeError("boom")
            return self.v + 0

    model = Acc()
    step = jv.jit(lambda m, x, fail: m(x, fail))
    with pytest.raises(RuntimeError, match="boom"):
        step(model, jnp.array([5.0, 6.0]), True)
    # Never a silent zero: the variable has no value until one is assigned.
    with pytest.raises(ValueError, match=r"'acc/acc' \(acc\.v\) is abstract.*a jv.jit call that"):
        step(model, jnp.array([5.0, 6.0]), False)
    model.v.assign(jnp.array([5.0, 6.0]))
    np.testing.assert_array_equal(step(model, jnp.zeros(2), False), [5.0, 6.0])


# -- 8, 10 (continued): lifted bodies nested anywhere build their layers once -------------


def dense(x):
    with jv.variable_scope(None, default_name="dense"):
        return x * jv.get_variable("k", shape=(), initializer=jax.nn.initializers.ones)


@pytest.mark.parametrize(
    "build",
    [
        lambda: jv.jit(lambda: jv.cond(True, lambda: dense(1.0), lambda: 0.0))(),
        lambda: jv.jit(lambda: jv.scan(lambda c, _: (dense(c), None), 1.0, length=2)[0])(),
        lambda: jv.jit(lambda: jv.while_loop(lambda c: c < 1.0, lambda c: dense(c) + 1.0, 0.5))(),
        lambda: jv.jit(lambda: jv.remat(dense)(1.0))(),
        lambda: jv.jit(lambda: jv.fori_loop(0, 2, lambda i, c: dense(c), 1.0))(),
        lambda: jv.scan(
            lambda c, _: (jv.cond(c > 0, lambda: dense(c), lambda: c), None), 1.0, length=2
        ),
    ],
    ids=["jit-cond", "jit-scan", "jit-while", "jit-remat", "jit-fori", "scan-cond"],
)
def test_a_default_name_layer_in_a_nested_lifted_body_is_built_once(build):
    build()
    assert sorted(jv.default_store()) == ["dense/k"]


def test_a_default_name_layer_in_a_scan_under_eager_grad_is_built_once():
    x = jv.Variable(2.0, name="x")
    g = jv.grad(lambda: jv.scan(lambda c, _: (dense(c), None), x * 1.0, length=2)[0], x)()
    assert float(g) == 1.0
    assert sorted(jv.default_store()) == ["dense/k"]


def test_the_compiled_code_uses_the_one_layer_built():
    step = jv.jit(lambda: jv.cond(True, lambda: dense(1.0), lambda: 0.0))
    assert float(step()) == 1.0
    jv.default_store()["dense/k"].assign(5.0)  # say, restored from a TF checkpoint
    assert float(step()) == 5.0


def test_two_default_name_layers_in_one_body_and_around_it_stay_distinct():
    def twice(c, _):
        return dense(dense(c)), None

    jv.jit(lambda: dense(jv.scan(twice, 1.0, length=2)[0]))()
    assert sorted(jv.default_store()) == ["dense/k", "dense_1/k", "dense_2/k"]


def test_get_variable_in_nested_eager_transforms_is_created_once():
    x = jv.Variable(2.0, name="x")

    def cell(c, _):
        return c * jv.get_variable("w", shape=(), initializer=jax.nn.initializers.ones), None

    with jv.variable_scope("rnn"):
        g = jv.grad(lambda: jv.scan(cell, x * 1.0, None, length=2)[0], x)()
    assert float(g) == 1.0
    with jv.variable_scope("cond_rnn"):
        jv.scan(
            lambda c, _: (jv.cond(c > 0, lambda: cell(c, 0)[0], lambda: c), None), 1.0, length=2
        )
    assert sorted(jv.default_store()) == ["cond_rnn/w", "rnn/w"]


def test_get_variable_in_a_cond_inside_vmap():
    def f(z):
        c = jv.get_variable("c", shape=(), initializer=jax.nn.initializers.ones)
        return jv.cond(z > 0, lambda: z * c, lambda: z)

    np.testing.assert_array_equal(jv.vmap(f)(jnp.array([2.0, -1.0])), [2.0, -1.0])
    with jv.variable_scope("jitted"):
        np.testing.assert_array_equal(jv.jit(jv.vmap(f))(jnp.array([3.0, -1.0])), [3.0, -1.0])
    assert sorted(jv.default_store()) == ["c", "jitted/c"]


def test_attributes_a_traced_step_sets_are_trace_time_side_effects():
    """As in jax.jit: a step setting an attribute it reads (a new array each
    trace) must not retrace itself forever, nor two steps setting a flag each
    way retrace each other."""

    class Attention(jv.Module):
        def __init__(self):
            super().__init__()
            self.w = jv.Variable(jnp.eye(4), name="w")
            self.training = True

        def __call__(self, x):
            self.scale = jnp.float32(0.5)  # a new array object on every trace
            return (x @ self.w * self.scale).sum()

    model = Attention()
    body, traces = counting(lambda m, x: m(x))
    step = jv.jit(body)

    def set_training(m, flag):
        m.training = flag
        return m(jnp.ones((2, 4)))

    train, evaluate = (
        jv.jit(lambda m: set_training(m, True)),
        jv.jit(lambda m: set_training(m, False)),
    )
    for _ in range(5):
        step(model, jnp.ones((2, 4)))
        train(model)
        evaluate(model)
    assert len(traces) == 1  # one trace, once


def test_setting_trainable_to_its_value_keeps_compiled_code():
    w = jv.Variable(jnp.ones(2), name="w")
    body, traces = counting(lambda: jv.grad(lambda: jnp.sum(w * w), w)())
    step = jv.jit(body)
    step()
    w.trainable = True
    step()
    assert len(traces) == 1  # one trace, once
    w.trainable = False
    np.testing.assert_array_equal(step(), [0.0, 0.0])


@pytest.mark.parametrize("use", ["if", "float"])
def test_a_bool_variable_as_a_python_condition_inside_jit_names_it(use):
    flag = jv.Variable(True, name="flag")

    @jv.jit
    def f(x):
        if use == "if":
            if flag:
                return x
            return -x
        return x * float(flag)

    with pytest.raises(TypeError, match=r"variable 'flag' \(`flag`\) holds a traced value"):
        f(1.0)


def test_more_eager_errors_end_at_the_users_line(tmp_path):
    import optax

    v = jv.Variable(jnp.zeros(3), name="v")
    jv.get_variable("g", shape=(2,))
    jv.save(tmp_path / "c", {"v": v})
    opt = jv.Optimizer(optax.sgd(0.1), [v])
    calls = [
        lambda: v.__iadd__(jnp.zeros(4)),
        lambda: v.scatter_update(jnp.array([7]), jnp.zeros(1)),
        lambda: v.sparse_read(jnp.array([7])),
        lambda: jv.get_variable("g", shape=(2,)),
        lambda: jv.restore(tmp_path / "c", {"v": jv.Variable(jnp.zeros(4))}),
        lambda: opt.apply_gradients([jnp.zeros(4)]),
    ]
    for call in calls:
        with pytest.raises(jv.JaxvarsError) as e:
            call()
        assert last_frame(e).filename == __file__ and no_jaxvars_frames(e), last_frame(e)
    with pytest.raises(ValueError) as e:
        v += jnp.zeros(4)
    assert last_frame(e).line == "v += jnp.zeros(4)"


def test_lifted_transform_errors_name_the_module_attribute_path():
    net = Net()
    var = net.bn.running_var
    with pytest.raises(ValueError, match=r"\(net\.bn\.running_var\)"):
        jv.vmap(lambda x: var.assign(x * var))(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\(net\.bn\.running_var\)"):
        jv.while_loop(lambda i: var.assign(var) is None, lambda i: i, 0)
    with pytest.raises(ValueError, match=r"\(net\.bn\.running_var\) of shape \(3,\) is split"):
        jv.scan(lambda h, x: (h * var, None), 1.0, length=4, variable_axes={var: 0})
    with pytest.raises(ValueError, match=r"along axis 2, which it does not have"):
        jv.scan(lambda h, x: (h * var, None), 1.0, length=3, variable_axes={var: 2})
    with pytest.raises(ValueError, match=r"\(net\.bn\.running_var\).*needs 4 slices.*one per lane"):
        jv.vmap(lambda x: x * var, variable_axes={var: 0})(jnp.ones(4))
    with pytest.raises(ValueError, match=r"jv.vmap: .*along axis 2, which it does not have"):
        jv.vmap(lambda x: x * var, variable_axes={var: 2})(jnp.ones(3))


def test_cond_in_jit_with_a_variable_in_one_branch_and_an_array_in_the_other():
    w = jv.Variable(2.0, name="w")
    step = jv.jit(lambda p: jv.cond(p, lambda: w * 2, lambda: w))
    assert float(step(False)) == 2.0 and float(step(True)) == 4.0


def test_an_equal_numpy_scalar_attribute_keeps_the_compiled_code():
    layer = Dropoutish()
    layer.rate = np.float32(0.5)
    body, traces = counting(lambda m, x: m(x))
    step = jv.jit(body)
    step(layer, 1.0)
    n = len(traces)
    layer.rate = np.float32(0.5)
    step(layer, 1.0)
    assert len(traces) == n
    layer.rate = np.float32(0.25)
    assert float(step(layer, 1.0)) == 0.25


def test_default_name_layers_in_two_branches_and_two_calls_are_distinct():
    def two_branches(p):
        return jv.cond(p, lambda: dense(1.0), lambda: dense(2.0))

    jv.jit(two_branches)(True)  # TF1's tf.cond builds a layer in each branch
    assert sorted(jv.default_store()) == ["dense/k", "dense_1/k"]
    jv.reset_default_store()
    step = jv.jit(lambda: jv.remat(dense)(1.0) + jv.remat(dense)(2.0))
    assert float(step()) == 3.0
    assert sorted(jv.default_store()) == ["dense/k", "dense_1/k"]
    jv.default_store()["dense_1/k"].assign(10.0)
    assert float(step()) == 21.0


def test_a_mask_made_in_the_creating_call_masks_that_calls_gradients():
    class Pruned(jv.Module):
        def __init__(self):
            super().__init__()
            self.w = None

        def __call__(self, x):
            if self.w is None:
                self.w = jv.Variable(x, trainable=jnp.abs(x) > 1, name="w")
            g = jv.grad(lambda: jnp.sum(self.w**2), self.w)()
            self.w.assign_sub(0.1 * g)
            return g

    eager, jitted = run_eager_and_jitted(Pruned, lambda m: m(jnp.arange(4.0)))
    jax.tree_util.tree_map(np.testing.assert_allclose, eager, jitted)
    np.testing.assert_array_equal(jitted[0], [0.0, 0.0, 4.0, 6.0])


def test_concurrent_first_calls_of_a_creating_step_lose_nothing():
    import threading

    class Counter(jv.Module):
        def __init__(self):
            super().__init__()
            self.total = None

        def __call__(self, x):
            if self.total is None:
                self.total = jv.Variable(x * 0, name="total")
            self.total.assign_add(x)
            return self.total.value

    model, errors = Counter(), []
    step = jv.jit(lambda m, x: m(x))
    barrier = threading.Barrier(4)

    def work():
        barrier.wait()
        try:
            for _ in range(10):
                step(model, jnp.ones(3))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(e))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    np.testing.assert_array_equal(model.total.numpy(), [40.0, 40.0, 40.0])


def test_the_creating_call_honours_placement_keywords_and_sharded_values():
    class Lazy(jv.Module):
        def __init__(self):
            super().__init__()
            self.v = None

        def __call__(self, x):
            if self.v is None:
                self.v = jv.Variable(x * 2, name="v")
            self.v.assign_add(1.0)
            return x + self.v

    out = jax.sharding.SingleDeviceSharding(jax.devices()[5])
    step = jv.jit(lambda m, x: m(x), out_shardings=out)
    model = Lazy()
    assert [step(model, jnp.ones(2)).devices() for _ in range(2)] == [{jax.devices()[5]}] * 2
    mesh = jax.make_mesh((8,), ("d",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
    x = jax.device_put(jnp.ones((8, 4)), sharding)
    sharded = Lazy()
    jv.jit(lambda m, x: m(x))(sharded, x)
    assert sharded.v.sharding.is_equivalent_to(sharding, 2)
    sharded.v.assign(jnp.zeros((8, 4)))  # keeps its placement, as eagerly
    assert sharded.v.sharding.is_equivalent_to(sharding, 2)


def test_get_variable_with_a_random_initializer_inside_vmap_is_drawn_once():
    layer = jv.vmap(lambda r: r @ jv.get_variable("w", (3, 4)))
    assert layer(jnp.ones((2, 3))).shape == (2, 4)
    w = jv.default_store()["w"]
    assert w.shape == (3, 4) and not w.is_abstract

    def branchy(r):
        return jv.cond(
            r.sum() > 0, lambda: r @ jv.get_variable("v", (3, 4)), lambda: r[:1] * 0 + jnp.zeros(4)
        )

    assert jv.vmap(branchy)(jnp.ones((2, 3))).shape == (2, 4)


def test_a_jitted_get_variable_step_follows_the_enclosing_scope_and_store():
    def tower(x):
        w = jv.get_variable("w", (3,), initializer=jnp.ones)
        w.assign_add(1.0)
        return x * w

    step = jv.jit(tower)
    outs = []
    for name in ["tower_0", "tower_1"]:
        with jv.variable_scope(name):
            outs.append(float(step(jnp.ones(3))[0]))
    assert outs == [2.0, 2.0]  # eager gives the same: one variable per tower
    assert sorted(jv.default_store()) == ["tower_0/w", "tower_1/w"]
    with jv.variable_scope("tower_0"):
        assert float(step(jnp.ones(3))[0]) == 3.0  # cached, and the right variable
    other = jv.Store()
    with other:
        step(jnp.ones(3))
    assert list(other) == ["w"] and "w" not in jv.default_store()
    jv.reset_default_store()  # a step compiled before looks its variables up afresh
    with jv.variable_scope("tower_0"):
        assert float(step(jnp.ones(3))[0]) == 2.0
    assert list(jv.default_store()) == ["tower_0/w"]


def test_cond_names_the_true_branchs_layer_first_as_tf():
    named = {}

    def layer(x, tag):
        with jv.variable_scope(None, default_name="dense"):
            named[tag] = jv.get_variable("w", (), initializer=jnp.ones).name
        return x

    jv.jit(lambda x: jv.cond(x > 0, lambda: layer(x, "true"), lambda: layer(x, "false")))(1.0)
    assert named == {"true": "dense/w", "false": "dense_1/w"}
