"""What Flax NNX, Keras and Equinox users do to whole models (issue 23): an optimizer over
part of a model, freezing a subtree, train / eval mode, a model built inside its first
gradient, restoring before the build, losses added in the forward pass, and TF1
templates' attributes."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxvars as jv


class BatchNorm(jv.Module):
    """NNX's BatchNorm, shortened: a scale that trains, statistics and a counter that don't."""

    def __init__(self, n):
        super().__init__()
        self.use_running_average = False
        self.scale = jv.Variable(jnp.ones(n), name="scale")
        self.mean = jv.Variable(jnp.zeros(n), name="mean", trainable=False)
        self.count = jv.Variable(0, name="count", trainable=False)

    def __call__(self, x):
        if self.use_running_average:
            return (x - self.mean) * self.scale
        self.mean.assign(0.9 * self.mean + 0.1 * x.mean(0))
        self.count.assign_add(1)
        return (x - x.mean(0)) * self.scale


class Dense(jv.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.w = jv.Variable(jv.random.normal((n_in, n_out)) * 0.5, name="w")

    def __call__(self, x):
        return x @ self.w


class Net(jv.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Dense(3, 4)
        self.norm = BatchNorm(4)
        self.head = Dense(4, 1)

    def __call__(self, x):
        return self.head(self.norm(self.encoder(x)))


X = jnp.asarray(np.random.default_rng(0).normal(size=(8, 3)), jnp.float32)


def loss_of(model):
    return lambda: jnp.mean((model(X) - 1.0) ** 2)


def snapshot(model):
    return {path: np.asarray(v.value) for path, v in model.named_variables().items()}


# -- 1. an optimizer over part of a model -------------------------------------------------


@pytest.mark.parametrize(
    ("wrt", "updated"),
    [
        ("trainable", ["encoder/w", "norm/scale", "head/w"]),
        ("head/", ["head/w"]),
        (lambda v: v.name.endswith("/w"), ["encoder/w", "head/w"]),
        ("modules", ["norm/scale", "head/w"]),
        ("variables", ["encoder/w"]),
    ],
)
def test_optimizer_wrt_updates_only_what_it_selects(wrt, updated):
    model = Net()
    wrt = {"modules": [model.norm, model.head], "variables": [model.encoder.w]}.get(wrt, wrt)
    opt = jv.Optimizer(optax.adam(0.1), model, wrt=wrt)
    assert list(opt.trainable_variables) == updated
    state = sorted(k for k in opt.checkpoint_variables() if "/mu/" in k)
    assert state == sorted(f"0/mu/{key}" for key in updated)
    before = snapshot(model)

    @jv.jit
    def step():
        opt.apply_gradients(jv.grad(loss_of(model), model)())

    for _ in range(3):
        step()
    assert step.cache_info().traces == 1
    after = snapshot(model)
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    # The statistics move by the model's own assignments, never by the optimiser.
    assert sorted(changed) == sorted([*updated, "norm/mean", "norm/count"])
    assert int(model.norm.count.value) == 3


def test_statistics_and_counters_get_no_optimizer_state():
    model = Net()
    opt = jv.Optimizer(optax.adam(0.1), model, wrt=lambda v: True)  # asks for all of them
    assert not [k for k in opt.checkpoint_variables() if "norm/mean" in k or "norm/count" in k]
    opt.minimize(loss_of(model))  # an int counter among them: no crash
    assert int(opt.iterations) == 1


def test_gradients_for_the_selected_variables_only_also_apply():
    model = Net()
    opt = jv.Optimizer(optax.sgd(0.1), model, wrt=[model.head])
    wrt = list(opt.trainable_variables.values())
    grads = jv.grad(loss_of(model), wrt)()
    opt.apply_gradients(tuple(grads))  # one per variable it updates
    before = np.asarray(model.encoder.w.value)
    opt.apply_gradients(jv.grad(loss_of(model), model)())  # one per trainable variable
    np.testing.assert_array_equal(model.encoder.w.value, before)


@pytest.mark.parametrize(
    ("wrt", "error", "message"),
    [
        ("decoder/", ValueError, r"wrt='decoder/' selects none of the target's variables"),
        ("(", ValueError, r"wrt='\(' is not a regular expression"),
        (3, TypeError, r"wrt must be \"trainable\", a regular expression"),
        ([3], TypeError, r"a wrt list holds Modules and Variables; got int"),
        ("outsider", ValueError, r"wrt lists variable 'outsider', which the target does not"),
        (lambda v: 1, TypeError, r"predicate must return True or False; for variable"),
    ],
)
def test_bad_wrt_is_a_clear_error_and_makes_nothing(wrt, error, message):
    model = Net()
    outsider = jv.Variable(1.0, name="outsider")
    names = list(jv.default_store())
    with pytest.raises(error, match=message):
        jv.Optimizer(optax.adam(0.1), model, wrt=[outsider] if wrt == "outsider" else wrt)
    assert list(jv.default_store()) == names


def test_wrt_is_fixed_and_a_changed_selection_rebuilds_its_state():
    model = Net()
    chosen = {"head/w"}
    opt = jv.Optimizer(optax.adam(0.1), model, wrt=lambda v: v is model.head.w or bool(chosen))
    with pytest.raises(ValueError, match=r"wrt is fixed when the optimiser is made"):
        opt.wrt = "encoder/"
    opt.minimize(loss_of(model))
    chosen.clear()  # now only head/w: the others' state goes at the next update
    opt.minimize(loss_of(model))
    assert [k for k in opt.checkpoint_variables() if "/mu/" in k] == ["0/mu/head/w"]


# -- 2. freezing a subtree ---------------------------------------------------------------


def test_freezing_a_subtree_stops_its_gradients_updates_and_state():
    model = Net()
    assert model.trainable == "mixed" and model.encoder.trainable is True
    assert model.norm.trainable == "mixed"
    opt = jv.Optimizer(optax.adam(0.1), model)
    model.encoder.trainable = False
    assert model.encoder.trainable is False and model.encoder.w.trainable is False
    before = np.asarray(model.encoder.w.value)
    grads = jv.grad(loss_of(model), model)()
    assert len(grads) == 2  # norm/scale and head/w
    opt.apply_gradients(grads)
    np.testing.assert_array_equal(model.encoder.w.value, before)
    assert not [k for k in opt.checkpoint_variables() if "encoder" in k]
    lines = []
    model.summary(print_fn=lines.append)
    assert [line.split("float32")[1].split()[0] for line in lines if "encoder/w" in line] == [
        "False"
    ]


def test_unfreezing_gives_back_masks_and_keeps_statistics_frozen():
    model = Net()
    mask = np.array([[True, False, True, False]] * 3)
    model.encoder.w.trainable = mask
    model.trainable = False
    assert model.trainable is False
    model.head.w.trainable = 0.5 > 0  # set directly while frozen: this setting stays
    model.trainable = True
    np.testing.assert_array_equal(model.encoder.w.trainable, mask)
    assert model.norm.mean.trainable is False and model.norm.count.trainable is False
    assert model.norm.scale.trainable is True and model.head.w.trainable is True
    with pytest.raises(TypeError, match=r"trainable is set to True or False"):
        model.trainable = mask
    np.testing.assert_array_equal(model.encoder.w.trainable, mask)


def test_freezing_retraces_a_compiled_step_once():
    model = Net()
    opt = jv.Optimizer(optax.sgd(0.1), model)

    @jv.jit
    def step():
        opt.minimize(loss_of(model))

    step()
    model.head.trainable = False
    before = np.asarray(model.head.w.value)
    step()
    step()
    np.testing.assert_array_equal(model.head.w.value, before)
    assert step.cache_info().traces == 2


# -- 3. train / eval mode -----------------------------------------------------------------


class Dropout(jv.Module):
    def __init__(self, rate):
        super().__init__()
        self.rate, self.deterministic = rate, False

    def __call__(self, x):
        return jv.random.dropout(x, self.rate, deterministic=self.deterministic)


class Noisy(jv.Module):
    """A layer of one's own, declaring its mode attribute."""

    mode_attributes = {"training": False}

    def __init__(self):
        super().__init__()
        self.training = True

    def __call__(self, x):
        return x + 1.0 if self.training else x


class Classifier(jv.Module):
    def __init__(self):
        super().__init__()
        self.norm = BatchNorm(3)
        self.drop = Dropout(0.5)
        self.noisy = Noisy()

    def __call__(self, x):
        return self.noisy(self.drop(self.norm(x)))


def test_eval_and_train_set_every_submodules_mode_and_retrace_once_per_switch():
    model = Classifier()
    step = jv.jit(lambda x: model(x))
    train_out = step(X)
    assert model.eval() is model
    assert model.norm.use_running_average and model.drop.deterministic
    assert model.noisy.training is False and "deterministic" not in vars(model)
    eval_out = step(X)
    np.testing.assert_allclose(eval_out, X - model.norm.mean.value)  # the running mean
    np.testing.assert_array_equal(step(X), eval_out)  # deterministic: the same again
    assert step.cache_info().traces == 2
    model.train()
    assert not model.drop.deterministic and model.noisy.training
    assert not np.array_equal(step(X), train_out)  # a new dropout mask
    step(X)
    assert step.cache_info().traces == 3


# -- 4. a model built inside its first gradient ------------------------------------------


class LazyDense(jv.Module):
    def __init__(self, n, rate=0.3):
        super().__init__()
        self.n, self.rate = n, rate

    def __call__(self, x):
        if not hasattr(self, "w"):
            self.w = jv.Variable(jv.random.normal((x.shape[-1], self.n)), name="w")
            self.b = jv.get_variable("b", shape=(self.n,), initializer=jnp.zeros)
        return jv.random.dropout(x, self.rate) @ self.w + self.b


@pytest.mark.parametrize("jitted", [False, True])
def test_a_lazy_module_builds_inside_its_first_gradient(jitted):
    def first_step(build_outside):
        jv.random.set_seed(7)
        with jv.Store():
            model = LazyDense(2)
            if build_outside:
                model(X)
            loss = loss_of(model)
            grads = (jv.jit(jv.grad(loss, model)) if jitted else jv.grad(loss, model))()
            return snapshot(model), grads

    built, grads = first_step(build_outside=False)
    outside, expected = first_step(build_outside=True)
    assert list(built) == ["w", "b"]
    for key in built:
        np.testing.assert_array_equal(built[key], outside[key])
    for got, want in zip(grads, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert float(jnp.abs(grads[0]).sum()) > 0


# -- 8. restoring before the build -------------------------------------------------------


class LazyNet(jv.Module):
    def __init__(self):
        super().__init__()
        self.layers = [LazyDense(4, rate=0.0), LazyDense(1, rate=0.0)]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def trained_and_saved(tmp_path, make=LazyNet):
    """A lazy model, built by a call and saved: (the model, its checkpoint)."""
    path = os.fspath(tmp_path / "trained.safetensors")
    trained = make()
    trained(X)
    jv.save(path, trained)
    return trained, path


@pytest.mark.parametrize("jitted", [False, True])
def test_restore_into_an_unbuilt_module_applies_values_as_variables_appear(tmp_path, jitted):
    trained, path = trained_and_saved(tmp_path)
    fresh = LazyNet()
    status = jv.restore(path, fresh)
    assert status.unconsumed == ["layers/0/b", "layers/0/w", "layers/1/b", "layers/1/w"]
    with pytest.raises(ValueError, match=r"not applied .*'layers/0/w'"):
        status.assert_consumed()
    first = (jv.jit(fresh) if jitted else fresh)(X)  # its first call computes with them
    np.testing.assert_array_equal(first, trained(X))
    assert status.assert_consumed() is status and status.unconsumed == []
    for key, value in snapshot(trained).items():
        np.testing.assert_array_equal(snapshot(fresh)[key], value)


def test_deferred_restore_reports_leftovers_missing_values_and_misfits(tmp_path):
    path = os.fspath(tmp_path / "one.safetensors")
    jv.save(path, {"layers/0/w": jv.Variable(jnp.ones((3, 4))), "extra": jv.Variable(1.0)})
    model = LazyNet()
    status = jv.restore(path, model)
    model(X)
    with pytest.raises(ValueError) as raised:
        status.assert_consumed()
    assert "not applied (no variable has its path yet): 'extra'" in str(raised.value)
    assert "created with no value in the checkpoint: 'layers/1/w'" in str(raised.value)
    np.testing.assert_array_equal(model.layers[0].w.value, np.ones((3, 4)))
    lenient = LazyNet()
    status = jv.restore(path, lenient, strict=False)
    lenient(X)
    with pytest.raises(ValueError) as raised:
        status.assert_consumed()
    assert "'extra'" not in str(raised.value) and "'layers/1/b'" in str(raised.value)

    wide = LazyNet()
    wide.layers[0].n = 5
    jv.restore(path, wide)
    with pytest.raises(ValueError, match=r"'layers/0/w': shape \(3, 4\) in the file, \(3, 5\)"):
        wide(X)
    with pytest.raises(TypeError, match=r"has no variables yet, so its values wait"):
        jv.restore(path, LazyNet(), map={"a": "b"})


# -- 9. losses added in the forward pass --------------------------------------------------


class Activity(jv.Module):
    """Keras's ActivityRegularization after a dense layer."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.dense = Dense(n_in, n_out)

    def __call__(self, x):
        y = self.dense(x)
        self.add_loss(0.5 * jnp.sum(y**2))
        return y


class Stack(jv.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = Activity(3, 2), Activity(2, 1)

    def __call__(self, x):
        return self.b(self.a(x))


def test_losses_are_collected_per_call_and_cleared_by_the_next():
    model = Stack()
    y = model(X)
    hidden = X @ model.a.dense.w.value
    np.testing.assert_allclose(model.losses, [0.5 * jnp.sum(hidden**2), 0.5 * jnp.sum(y**2)])
    assert len(model.a.losses) == 1
    model(X[:2])
    assert len(model.losses) == 2  # the new call's, not four
    np.testing.assert_allclose(model.losses[1], 0.5 * jnp.sum(model(X[:2]) ** 2))
    assert list(model.named_variables()) == ["a/dense/w", "b/dense/w"]
    assert len(jv.global_variables()) == 2
    with pytest.raises(ValueError, match=r"add_loss takes a scalar loss, got shape \(8, 2\)"):
        model.a.add_loss(jnp.ones((8, 2)))


def test_losses_come_out_of_jit_and_grad_as_values_and_are_differentiable():
    model = Stack()

    def total():
        return jnp.sum(model(X)) + jv.regularization_loss(model)

    @jv.jit
    def step():
        loss, grads = jv.value_and_grad(total, model)()
        return loss, grads

    loss, grads = step()
    assert all(not isinstance(x, jax.core.Tracer) for x in model.losses)
    w_a, w_b = model.a.dense.w.value, model.b.dense.w.value
    expected = jax.grad(
        lambda wa, wb: (
            jnp.sum(X @ wa @ wb) + 0.5 * jnp.sum((X @ wa) ** 2) + 0.5 * jnp.sum((X @ wa @ wb) ** 2)
        )
    )(w_a, w_b)
    np.testing.assert_allclose(grads[0], expected, rtol=1e-5)
    np.testing.assert_allclose(float(loss), float(jnp.sum(model(X)) + sum(model.losses)))
    model.a.dense.w.assign(w_a * 2)
    step()  # its first trace made the loss slots: one more trace, then none
    step()  # cached: no Python runs, its losses are still its own
    assert step.cache_info().traces == 2
    np.testing.assert_allclose(model.losses[0], 0.5 * jnp.sum((X @ (w_a * 2)) ** 2), rtol=1e-6)


class BigBatchPenalty(jv.Module):
    """Adds its loss only for batches over 4: the count differs from call to call."""

    def __call__(self, x):
        if x.shape[0] > 4:
            self.add_loss(jnp.sum(x))
        return x


def test_a_cached_step_leaves_its_own_losses_after_an_eager_call_added_others():
    layer = BigBatchPenalty()
    step = jv.jit(layer)
    step(X)
    step(X)  # the slots exist now: cached from here on
    layer(X[:2])  # eagerly: no loss this call
    assert layer.losses == []
    step(X)  # cached: no Python ran, yet its loss is the one listed
    assert step.cache_info().traces == 2
    np.testing.assert_allclose(layer.losses, [jnp.sum(X)], rtol=1e-6)


# -- 10. templates as TF users know them ---------------------------------------------------


def test_templates_have_tf_attributes_and_refuse_late_trainable_variables():
    def tower(x, late=False):
        w = jv.get_variable("w", initializer=2.0)
        jv.Variable(0, name="calls", trainable=False)  # non-trainable: allowed every call
        if late:
            jv.Variable(1.0, name="oops")
        return x * w

    template = jv.make_template("tower", tower)
    template(1.0)
    assert template.variable_scope_name == "tower" and template.name == "tower"
    assert [v.name for v in template.trainable_variables] == ["tower/w"]
    assert [v.name for v in template.non_trainable_variables] == ["tower/calls"]
    assert float(jv.jit(template)(3.0)) == 6.0
    with pytest.raises(ValueError, match=r"^Trainable variable created when calling a template "):
        template(1.0, late=True)
    assert [v.name for v in template.trainable_variables] == ["tower/w"]


# -- 5. stacked modules as scanned arguments ----------------------------------------------


class Block(jv.Module):
    def __init__(self):
        super().__init__()
        self.w = jv.Variable(jv.random.normal((4, 4)) * 0.5, name="w")
        self.calls = jv.Variable(0, name="calls", trainable=False)

    def __call__(self, h):
        self.calls.assign_add(1)
        return jnp.tanh(h @ self.w)


class Deep(jv.Module):
    """NNX's scan over layers: ``nnx.scan(..., in_axes=(nnx.Carry, 0))(x, self.blocks)``."""

    def __init__(self, depth=5):
        super().__init__()
        self.blocks = jv.vmap(Block, axis_size=depth, variable_axes=0)()

    def __call__(self, x, scales=None):
        if scales is None:
            return jv.scan(lambda h, block: (block(h), None), x, self.blocks)[0]
        return jv.scan(lambda h, xs: (xs[0](h) * xs[1], None), x, (self.blocks, scales))[0]


def unrolled(stacked_w, x, scales):
    for w, s in zip(stacked_w, scales, strict=True):
        x = jnp.tanh(x @ w) * s
    return x


def test_scan_slices_a_stacked_module_per_step_and_writes_each_layer_back():
    model = Deep()
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4)), jnp.float32)
    w = model.blocks.w.value
    assert w.shape == (5, 4, 4)
    np.testing.assert_allclose(model(x), unrolled(w, x, jnp.ones(5)), rtol=1e-6)
    np.testing.assert_array_equal(model.blocks.calls.value, [1] * 5)  # each layer's slice
    scales = jnp.linspace(0.5, 1.5, 5)
    np.testing.assert_allclose(model(x, scales), unrolled(w, x, scales), rtol=1e-6)

    @jv.jit
    def grads(x):
        return jv.grad(lambda: jnp.sum(model(x, scales) ** 2), model)()

    got = grads(x)
    grads(x)
    assert grads.cache_info().traces == 1
    want = jax.grad(lambda w: jnp.sum(unrolled(w, x, scales) ** 2))(w)
    np.testing.assert_allclose(got[0], want, rtol=1e-5)
    np.testing.assert_array_equal(model.blocks.calls.value, [4] * 5)


def test_scan_over_a_module_without_one_slice_per_step_names_the_variable():
    model = Deep()
    with pytest.raises(ValueError, match=r"variable 'deep/block/\w+' .* needs 3 slices there"):
        jv.scan(lambda h, block: (block(h), None), jnp.ones((1, 4)), model.blocks, length=3)
    np.testing.assert_array_equal(model.blocks.calls.value, [0] * 5)


# -- what an adversarial review found ------------------------------------------------------


@pytest.mark.parametrize(
    "first", ["grad", "jit grad", "optimizer step", "eval_shape", "failed jit"]
)
def test_a_waiting_restore_survives_every_way_the_module_is_first_built(tmp_path, first):
    trained, path = trained_and_saved(tmp_path)
    model = LazyNet()
    status = jv.restore(path, model)
    loss = loss_of(model)
    if first == "grad":
        jv.grad(loss, model)()
    elif first == "jit grad":
        jv.jit(jv.grad(loss, model))()
    elif first == "optimizer step":
        opt = jv.Optimizer(optax.sgd(0.0), model)
        jv.jit(lambda: opt.minimize(loss))()
    elif first == "eval_shape":
        jv.eval_shape(model, X)
    else:

        def failing():
            model(X)
            raise RuntimeError("after the build")

        with pytest.raises(RuntimeError):
            jv.jit(failing)()
    np.testing.assert_array_equal(model(X), trained(X))
    assert status.assert_consumed().unconsumed == []


def test_a_waiting_restore_reaches_layers_appended_to_a_list_in_the_build(tmp_path):
    class Appending(jv.Module):
        def __init__(self):
            super().__init__()
            self.layers = []

        def __call__(self, x):
            if not self.layers:
                self.layers.append(LazyDense(2, rate=0.0))
            return self.layers[0](x)

    trained, path = trained_and_saved(tmp_path, Appending)
    model = Appending()
    status = jv.restore(path, model)
    np.testing.assert_array_equal(model(X), trained(X))
    assert status.unconsumed == []


def test_a_restore_into_a_built_target_lists_what_strict_false_skipped(tmp_path):
    path = os.fspath(tmp_path / "extra.safetensors")
    jv.save(path, {"w": jv.Variable(1.0), "extra": jv.Variable(2.0)})
    w = jv.Variable(0.0, name="w")
    status = jv.restore(path, {"w": w}, strict=False)
    assert status.unconsumed == ["extra"] and float(w.value) == 1.0


class Encoder(jv.Module):
    """Losses added by methods other than __call__ (NNX's and Equinox's encode)."""

    def __init__(self):
        super().__init__()
        self.inner = Activity(3, 2)

    def encode(self, x):
        self.add_loss(jnp.float32(1.0))
        return self.inner(self.inner.dense(x) @ jnp.ones((2, 3)))


def test_losses_from_any_top_level_method_are_per_call():
    model = Encoder()
    for _ in range(3):
        model.encode(X)
        assert len(model.losses) == 2


@pytest.mark.parametrize("where", ["cond", "scan", "vmap"])
def test_add_loss_inside_a_lifted_body_is_a_clear_error(where):
    layer = Activity(3, 2)
    with pytest.raises(ValueError, match=r"add_loss inside a jv\.\w+.* is not supported"):
        if where == "cond":
            jv.jit(lambda p: jv.cond(p, lambda: layer(X), lambda: X[:, :2]))(True)
        elif where == "scan":
            jv.scan(lambda h, _: (layer(X), None), X[:, :2], length=2)
        else:
            jv.vmap(layer)(X)


def test_losses_after_eval_shape_are_none_until_a_real_call():
    layer = Activity(3, 2)
    jv.eval_shape(layer, X)
    assert layer.losses == []
    layer(X)
    assert len(layer.losses) == 1


def test_a_module_frozen_before_it_builds_creates_frozen_variables():
    class KerasStyle(LazyDense):
        def __init__(self, n, trainable=True):
            super().__init__(n, rate=0.0)
            self.trainable = trainable  # Keras's constructor argument

    layer = KerasStyle(2, trainable=False)
    assert layer.trainable is False
    layer(X)
    assert layer.w.trainable is False and layer.b.trainable is False
    layer.trainable = True
    assert layer.trainable is True


def test_refreezing_keeps_a_setting_made_directly_while_frozen():
    model = Net()
    model.encoder.w.trainable = np.zeros((3, 4), bool)
    model.trainable = False
    model.encoder.w.trainable = True  # set directly while frozen
    model.trainable = False
    model.trainable = True
    assert model.encoder.w.trainable is True


def test_wrt_is_checked_against_what_a_lazy_module_builds():
    model = LazyNet()
    opt = jv.Optimizer(optax.adam(0.1), model, wrt="laers/")  # a typo
    with pytest.raises(ValueError, match=r"wrt='laers/' selects none of the target's variables"):
        opt.minimize(loss_of(model))
    with pytest.raises(ValueError, match=r"wrt lists module 'dense'"):
        jv.Optimizer(optax.adam(0.1), Net(), wrt=[Dense(3, 4)])


def test_minimize_builds_a_module_with_no_variables_and_takes_dict_gradients():
    model = LazyNet()
    opt = jv.Optimizer(optax.sgd(1e-3), model)
    first = float(opt.minimize(loss_of(model)))
    assert int(opt.iterations) == 1 and float(loss_of(model)()) < first
    head = jv.Optimizer(optax.sgd(0.1), model, wrt="layers/1/")
    before = np.asarray(model.layers[0].w.value)
    head.apply_gradients(jv.grad(loss_of(model), head.trainable_variables)())  # a dict
    np.testing.assert_array_equal(model.layers[0].w.value, before)


def test_a_frozen_module_is_not_built_again_by_jv_grad():
    model = Dense(3, 2)
    model.trainable = False
    key = np.asarray(jv.random.key_variable().value)
    with pytest.raises(ValueError, match=r"has no trainable variables"):
        jv.grad(lambda: jnp.sum(jv.random.dropout(model(X), 0.5)), model)()
    np.testing.assert_array_equal(jv.random.key_variable().value, key)  # it never ran


def test_scan_refuses_a_scalar_in_xs_and_a_second_axis_for_it():
    w = jv.Variable(jnp.ones((3, 2)), name="stacked")
    with pytest.raises(ValueError, match=r"'stacked' is in xs, which scans it along axis 0"):
        jv.scan(lambda h, w: (h, None), 0.0, w, variable_axes={w: 1})
    scalar = jv.Variable(1.0, name="scalar")
    with pytest.raises(ValueError, match=r"'scalar' in xs is a scalar, with no axis 0"):
        jv.scan(lambda h, s: (h, None), 0.0, scalar)
