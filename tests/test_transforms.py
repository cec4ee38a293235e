"""jv.jit, jv.grad, jv.value_and_grad and jv.fori_loop (API.md section 4)."""

import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from models import Dense

import jaxvars as jv


def sgd_step(model, x, y, lr=0.1):
    loss, grads = jv.value_and_grad(lambda: jnp.mean((model(x) - y) ** 2), model)()
    for variable, grad in zip(model.trainable_variables, grads, strict=True):
        variable.assign_sub(lr * grad)
    return loss


X = jnp.asarray(np.random.default_rng(0).normal(size=(16, 3)), jnp.float32)
Y = X @ jnp.array([[1.0], [-2.0], [0.5]])


# -- jv.jit: reading and assigning ---------------------------------------------------


def test_closure_assignments_are_visible_after_the_call():
    counter = jv.Variable(0, name="counter")
    total = jv.Variable(0.0, name="total")

    @jv.jit
    def tick(step):
        counter.assign_add(1)
        total.assign_add(step * 2.0)
        return counter + 100

    assert int(tick(1.0)) == 101
    assert int(tick(2.5)) == 102
    assert int(counter) == 2 and float(total) == 7.0
    assert not isinstance(counter.value, jax.core.Tracer)


def test_module_and_variable_arguments_also_nested():
    model = Dense(3, 1, 0.5)
    extra = jv.Variable(1.0, name="extra")

    @jv.jit
    def step(parts, x):
        parts["model"].b.assign_add(parts["scale"][0])
        parts["scale"][0].assign(parts["scale"][0] * 2)
        return parts["model"](x)

    out = step({"model": model, "scale": [extra]}, X)
    assert out.shape == (16, 1)
    np.testing.assert_array_equal(model.b.numpy(), [1.0])
    assert float(extra) == 2.0
    step({"model": model, "scale": [extra]}, X)
    np.testing.assert_array_equal(model.b.numpy(), [3.0])


def test_jitted_training_matches_eager_training():
    jv.random.set_seed(1)
    eager = Dense(3, 1, 0.5)
    jv.random.set_seed(1)
    compiled = Dense(3, 1, 0.5)
    step = jv.jit(sgd_step)
    for _ in range(20):
        eager_loss = sgd_step(eager, X, Y)
        jit_loss = step(compiled, X, Y)
    np.testing.assert_allclose(jit_loss, eager_loss, rtol=1e-5)
    np.testing.assert_allclose(compiled.w.numpy(), eager.w.numpy(), rtol=1e-5)
    assert float(jit_loss) < 0.1


def test_compiled_code_is_reused_for_new_values_and_same_shaped_inputs():
    runs = []
    model = Dense(3, 1, 0.5)

    @jv.jit
    def step(model, x, y):
        runs.append(1)
        return sgd_step(model, x, y)

    step(model, X, Y)
    first = len(runs)  # one trace
    assert first == 1
    for i in range(5):
        model.w.assign(jnp.full((3, 1), float(i)))  # new variable values
        step(model, X + i, Y * i)  # new inputs of the same shape
    assert len(runs) == first
    step(model, X[:8], Y[:8])  # a new shape traces once more
    assert len(runs) == first + 1


def test_static_arguments_pass_through():
    v = jv.Variable(1.0)
    runs = []

    @jv.jit(static_argnums=1, static_argnames="mode")
    def f(x, power, mode="add"):
        runs.append(1)
        out = v * x**power
        return out + 1 if mode == "add" else out

    assert float(f(2.0, 2)) == 5.0
    assert float(f(3.0, 2)) == 10.0
    assert float(f(2.0, 3)) == 9.0
    assert float(f(2.0, 3, mode="none")) == 8.0
    assert len(runs) == 3  # three static signatures, one trace each
    with pytest.raises(TypeError, match="static arguments must be hashable"):
        f(2.0, [1])


def test_jit_keywords_pass_through_and_unsupported_ones_are_refused():
    v = jv.Variable([1.0, 2.0])
    f = jv.jit(lambda: v * 2, keep_unused=True)
    np.testing.assert_array_equal(f(), [2.0, 4.0])
    with pytest.raises(TypeError, match="does not take donate_argnums"):
        jv.jit(lambda: v, donate_argnums=0)


def test_changing_trainable_retraces_and_never_gives_stale_gradients():
    model = Dense(3, 1, 0.5)
    step = jv.jit(sgd_step)
    step(model, X, Y)
    model.w.trainable = False
    before = model.w.value
    step(model, X, Y)
    np.testing.assert_array_equal(model.w.numpy(), before)
    model.w.trainable = np.array([[True], [False], [True]])
    before = model.w.numpy()
    step(model, X, Y)
    after = model.w.numpy()
    assert after[1, 0] == before[1, 0] and after[0, 0] != before[0, 0]


def test_changing_a_modules_variables_retraces():
    model = Dense(3, 1, 0.5)
    step = jv.jit(lambda m, x: m(x))
    np.testing.assert_array_equal(step(model, jnp.ones((1, 3))), model(jnp.ones((1, 3))))
    model.w = jv.Variable(jnp.ones((3, 1)), name="w2")
    np.testing.assert_allclose(step(model, jnp.ones((1, 3))), [[3.0]])


def test_changing_a_modules_list_or_dict_in_place_retraces():
    class Stack(jv.Module):
        def __init__(self):
            super().__init__()
            self.layers = [Dense(2, 2, 0.5)]
            self.gains = {"out": jv.Variable(1.0, name="gain")}

        def __call__(self, x):
            for layer in self.layers:
                x = layer(x)
            return x * self.gains["out"]

    stack = Stack()
    step = jv.jit(lambda m, x: m(x))
    x = jnp.ones((1, 2))
    assert step(stack, x).shape == (1, 2)
    stack.layers.append(Dense(2, 1, 0.5))
    assert step(stack, x).shape == (1, 1)
    np.testing.assert_allclose(step(stack, x), stack(x), rtol=1e-6)
    stack.gains["out"] = jv.Variable(3.0, name="gain")
    np.testing.assert_allclose(step(stack, x), stack(x), rtol=1e-6)
    assert isinstance(stack.layers, list) and isinstance(stack.gains, dict)
    assert len(jax.tree.leaves({"layers": stack.layers, "gains": stack.gains})) == 3


def test_a_branch_that_touches_another_variable_is_picked_up():
    a, b = jv.Variable(1.0, name="a"), jv.Variable(10.0, name="b")
    use_b = [False]

    @jv.jit
    def f(x):
        if use_b[0]:  # Python state jax.jit would bake in; jv.jit notices the new variable
            b.assign_add(x.sum())
            return b * 1
        return a * x

    assert float(f(2.0)) == 2.0
    use_b[0] = True
    f(jnp.ones((2,)))  # a new shape retraces, now touching b
    assert float(b) == 12.0


def test_get_variable_inside_the_first_call_makes_concrete_variables():
    @jv.jit
    def model(x):
        with jv.variable_scope("model", reuse=jv.AUTO_REUSE):
            w = jv.get_variable("w", (3, 2), initializer=jax.nn.initializers.ones)
            counter = jv.get_variable("calls", initializer=0)
            counter.assign_add(1)
            return x @ w

    np.testing.assert_array_equal(model(jnp.ones((1, 3))), [[3.0, 3.0]])
    model(jnp.ones((1, 3)))
    store = jv.default_store()
    assert list(store) == ["model/w", "model/calls"]
    assert int(store["model/calls"]) == 2
    assert all(not isinstance(v.value, jax.core.Tracer) for v in store.variables())


def test_a_variable_created_on_every_trace_is_a_clear_error():
    @jv.jit
    def f(x):
        return jv.Variable(lambda: jnp.zeros(2), name="fresh") + x

    with pytest.raises(jv.JaxvarsError, match="variable 'fresh' is created on every trace"):
        f(1.0)


def test_a_variable_made_from_a_traced_value_on_every_trace_is_a_clear_error():
    @jv.jit
    def f(x):
        return jv.Variable(x * 2, name="bad")

    # The first call creates it from the value computed (as tf.function's first
    # trace does); the next one shows it is created on every call.
    assert float(f(1.0)) == 2.0
    with pytest.raises(jv.JaxvarsError, match="variable 'bad' is created on every trace"):
        f(1.0)


def test_modules_built_lazily_on_the_first_call_work():
    class Lazy(jv.Module):
        def __call__(self, x):
            if not hasattr(self, "w"):
                self.w = jv.Variable(lambda: jnp.ones((x.shape[-1], 1)), name="w")
            self.w.assign_add(1.0)
            return x @ self.w

    lazy = Lazy()
    step = jv.jit(lambda m, x: m(x))
    np.testing.assert_array_equal(step(lazy, jnp.ones((1, 2))), [[4.0]])
    np.testing.assert_array_equal(step(lazy, jnp.ones((1, 2))), [[6.0]])
    np.testing.assert_array_equal(lazy.w.numpy(), [[3.0], [3.0]])


def test_exceptions_leave_every_variable_as_it_was():
    v = jv.Variable([1.0, 2.0], name="v")
    fail = [False]

    @jv.jit
    def f(x):
        v.assign_add(x)
        if fail[0]:
            raise RuntimeError("boom")
        return v * 1

    f(1.0)
    before = v.value
    fail[0] = True
    with pytest.raises(RuntimeError, match="boom"):
        f(jnp.ones(2))  # new shape: traces, and fn raises
    assert v.value is before
    fail[0] = False
    np.testing.assert_array_equal(f(1.0), [3.0, 4.0])


def test_assigned_buffers_are_donated_but_held_arrays_stay_valid():
    v = jv.Variable(jnp.zeros(1000), name="v")

    @jv.jit(donate=True)
    def step():
        v.assign_add(1.0)

    step()
    pointer = v.value.unsafe_buffer_pointer()
    step()
    assert v.value.unsafe_buffer_pointer() == pointer  # updated in place: donated
    held = v.value
    step()
    assert not held.is_deleted()
    np.testing.assert_array_equal(held[:2], [2.0, 2.0])
    np.testing.assert_array_equal(v.numpy()[:2], [3.0, 3.0])
    view = np.asarray(v)
    step()
    np.testing.assert_array_equal(view[:2], [3.0, 3.0])
    other = jv.Variable([0.0])
    other.assign(v[:1])
    shared = jv.Variable(jnp.zeros(1000))
    shared.assign(v)  # two variables, one buffer: donating it would break `shared`
    step()
    np.testing.assert_array_equal(shared.numpy()[:2], [4.0, 4.0])


def test_donate_false_never_donates():
    v = jv.Variable(jnp.zeros(1000), name="v")
    never = jv.jit(lambda: v.assign_add(1.0), donate=False)
    never()
    pointer = v.value.unsafe_buffer_pointer()
    never()
    assert v.value.unsafe_buffer_pointer() != pointer and float(v[0]) == 2.0
    with pytest.raises(TypeError, match="donate= is True or False"):
        jv.jit(lambda: None, donate="yes")


def test_raw_transforms_inside_jv_jit_cannot_assign():
    v = jv.Variable(0.0, name="inside")

    @jv.jit
    def with_raw_loop():
        def body(i, carry):
            v.assign_add(1.0)
            return carry

        return jax.lax.fori_loop(0, 3, body, 0.0)

    with pytest.raises(TypeError, match="variable 'inside'.*jv.fori_loop"):
        with_raw_loop()

    def assign_and_return(x):
        v.assign(x)
        return x

    @jv.jit
    def with_vmap(xs):
        return jax.vmap(assign_and_return)(xs)

    with pytest.raises(TypeError, match="'inside'.*jv.jit"):
        with_vmap(jnp.ones(3))
    assert float(v) == 0.0 and not isinstance(v.value, jax.core.Tracer)


def test_an_assigning_jv_jit_function_refuses_to_run_under_raw_transforms():
    total = jv.Variable(0.0, name="total")
    scale = jv.Variable(2.0, name="scale")

    @jv.jit
    def accumulate(x):
        total.assign_add(x)
        return x

    with pytest.raises(TypeError, match="assigns variables \\('total'\\).*jax.vmap"):
        jax.vmap(accumulate)(jnp.ones(3))
    assert float(total) == 0.0 and not isinstance(total.value, jax.core.Tracer)
    reads_only = jv.jit(lambda x: x * scale)
    np.testing.assert_array_equal(jax.vmap(reads_only)(jnp.ones(3)), [2.0, 2.0, 2.0])


def test_random_stream_advances_across_jitted_calls():
    draw = jv.jit(lambda: jv.random.normal((3,)))
    jv.random.set_seed(5)
    first, second = draw(), draw()
    assert not np.array_equal(first, second)
    jv.random.set_seed(5)
    np.testing.assert_array_equal(draw(), first)
    jv.random.set_seed(5)
    np.testing.assert_array_equal(jv.random.normal((3,)), first)  # same stream eagerly


def test_nested_jv_jit_is_inlined():
    v = jv.Variable(1.0)

    @jv.jit
    def inner(x):
        v.assign_add(x)
        return v * 1

    outer = jv.jit(lambda x: inner(x) + inner(x))
    assert float(outer(1.0)) == 5.0  # 2 + 3
    assert float(v) == 3.0


def test_compiled_code_does_not_keep_modules_alive():
    model = Dense(3, 1, 0.5)
    step = jv.jit(lambda m, x: m(x))
    step(model, X)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
    assert len(step._jitted._cache) == 0


def test_jit_as_a_method_decorator():
    class Counter(jv.Module):
        def __init__(self):
            super().__init__()
            self.n = jv.Variable(0, name="n")

        @jv.jit
        def bump(self, k):
            self.n.assign_add(k)
            return self.n * 1

    counter = Counter()
    assert int(counter.bump(2)) == 2 and int(counter.bump(3)) == 5


# -- gradients ------------------------------------------------------------------------


def test_grad_structures_follow_wrt():
    a, b = jv.Variable([1.0, 2.0]), jv.Variable(3.0)

    def f():
        return (a * a).sum() + b * b

    np.testing.assert_array_equal(jv.grad(f, a)(), [2.0, 4.0])
    grads = jv.grad(f, [a, b])()
    assert isinstance(grads, list) and float(grads[1]) == 6.0
    assert isinstance(jv.grad(f, (a, b))(), tuple)
    as_dict = jv.grad(f, {"a": a, "b": b})()
    assert set(as_dict) == {"a", "b"} and float(as_dict["b"]) == 6.0
    model = Dense(2, 1, 0.5)
    module_grads = jv.grad(lambda: model(jnp.ones((1, 2))).sum(), model)()
    assert isinstance(module_grads, tuple) and len(module_grads) == 2
    np.testing.assert_array_equal(module_grads[0], [[1.0], [1.0]])


def test_has_aux_follows_jax():
    w = jv.Variable(2.0)
    grads, aux = jv.grad(lambda: (w * w, "aux"), w, has_aux=True)()
    assert float(grads) == 4.0 and aux == "aux"
    (value, aux), grads = jv.value_and_grad(lambda: (w * w, {"k": 1}), w, has_aux=True)()
    assert float(value) == 4.0 and aux == {"k": 1} and float(grads) == 4.0
    value, grads = jv.value_and_grad(lambda: w * 3, w)()
    assert float(value) == 6.0 and float(grads) == 3.0


def test_frozen_and_masked_variables_get_zero_gradients():
    frozen = jv.Variable([1.0, 1.0], trainable=False)
    masked = jv.Variable([1.0, 1.0, 1.0], trainable=[True, False, True])

    def f():
        return (frozen * 3).sum() + (masked * 5).sum()

    g_frozen, g_masked = jv.grad(f, [frozen, masked])()
    np.testing.assert_array_equal(g_frozen, [0.0, 0.0])
    np.testing.assert_array_equal(g_masked, [5.0, 0.0, 5.0])
    g_frozen, g_masked = jv.jit(jv.grad(f, [frozen, masked]))()
    np.testing.assert_array_equal(g_masked, [5.0, 0.0, 5.0])


def test_assignments_in_the_differentiated_function_land_after_the_gradient():
    w = jv.Variable(3.0, name="w")
    calls = jv.Variable(0, name="calls")

    def loss():
        calls.assign_add(1)
        value = w * w
        w.assign(100.0)  # a write to a differentiated variable, applied afterwards
        return value

    for run in (lambda f: f(), lambda f: jv.jit(f)()):
        w.assign(3.0)
        grads = run(jv.grad(loss, w))
        assert float(grads) == 6.0
        assert float(w) == 100.0
    assert int(calls) == 2


def test_per_example_gradients_under_vmap():
    w = jv.Variable(jnp.array([1.0, 2.0]))

    def loss(x):
        return jnp.sum(w * x) ** 2

    xs = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    per_example = jax.vmap(jv.grad(loss, w))(xs)
    expected = np.stack([np.asarray(jv.grad(loss, w)(x)) for x in xs])
    np.testing.assert_allclose(per_example, expected)
    np.testing.assert_allclose(jv.jit(lambda xs: jax.vmap(jv.grad(loss, w))(xs))(xs), expected)


def test_bad_wrt():
    with pytest.raises(TypeError, match="wrt must be a Variable, a Module.*found ArrayImpl"):
        jv.grad(lambda: 0.0, [jnp.ones(2)])()


# -- fori_loop -------------------------------------------------------------------------


def test_fori_loop_eagerly_with_carry_and_variables():
    total = jv.Variable(0, name="total")

    def body(i, carry):
        total.assign_add(i)
        return carry * 2

    assert int(jv.fori_loop(0, 5, body, 1)) == 32
    assert int(total) == 10
    jv.fori_loop(0, 3, lambda i, c: c)  # no carry, no variables


def test_eager_fori_loop_keeps_neither_its_body_nor_its_variables_alive():
    def make():
        counter = jv.Variable(0, name="counter")

        def body(i, carry):
            counter.assign_add(1)
            return carry

        return counter, body

    counter, body = make()
    jv.fori_loop(0, 3, body)
    jv.fori_loop(0, 2, body)  # the same body: compiled once, reused
    assert int(counter) == 5
    refs = [weakref.ref(counter), weakref.ref(body)]
    del counter, body
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


def test_fori_loop_runs_many_training_steps_in_one_call():
    jv.random.set_seed(3)
    looped = Dense(3, 1, 0.5)
    jv.random.set_seed(3)
    stepped = Dense(3, 1, 0.5)

    @jv.jit
    def train(model, x, y):
        def body(i, last):
            return sgd_step(model, x, y)

        return jv.fori_loop(0, 25, body, jnp.zeros(()))

    loss = train(looped, X, Y)
    for _ in range(25):
        expected = sgd_step(stepped, X, Y)
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
    np.testing.assert_allclose(looped.w.numpy(), stepped.w.numpy(), rtol=1e-4)


def test_fori_loop_with_randomness_advances_the_stream():
    seen = jv.Variable(jnp.zeros((4, 2)), name="seen")

    def body(i, carry):
        seen[i] = jv.random.normal((2,))
        return carry

    jv.fori_loop(0, 4, body)
    rows = seen.numpy()
    assert len({tuple(r) for r in rows.tolist()}) == 4


def test_a_concrete_array_assigned_inside_a_raw_jit_is_an_error():
    v = jv.Variable(jnp.zeros(3), name="kept")
    ones = jnp.ones(3)

    @jax.jit
    def raw(x):
        v.assign(ones)  # would happen once, while tracing, and never again
        return x

    with pytest.raises(TypeError, match="variable 'kept'.*once while tracing"):
        raw(1.0)

    @jv.jit
    def outer(x):
        return jax.jit(raw)(x)

    with pytest.raises(TypeError, match="variable 'kept'.*once while tracing"):
        outer(1.0)

    def body(i, carry):
        v[0] = 5.0
        return carry

    with pytest.raises(TypeError, match="variable 'kept'"):
        jax.lax.fori_loop(0, 2, body, 0)
    np.testing.assert_array_equal(v.numpy(), [0.0, 0.0, 0.0])


def test_grad_of_a_function_returning_a_variable_and_aux_variables():
    w = jv.Variable(3.0, name="w")
    loss = jv.Variable(0.0, name="loss")

    def fn():
        loss.assign(w * w)
        return loss, w

    grads, aux = jv.grad(fn, [w], has_aux=True)()
    assert float(grads[0]) == 6.0 and aux is w and float(loss) == 9.0
    (value, aux), grads = jv.jit(lambda: jv.value_and_grad(fn, w, has_aux=True)())()
    assert float(value) == 9.0 and aux is w and float(grads) == 6.0


@pytest.mark.parametrize("wrt", [[], (), {}], ids=["list", "tuple", "dict"])
def test_grad_with_no_variables_is_an_error(wrt):
    w = jv.Variable(1.0)
    with pytest.raises(ValueError, match="no variable was given.*empty") as e:
        jv.grad(lambda: w * 2, wrt)()
    assert isinstance(e.value, jv.JaxvarsError)


def test_grad_over_a_module_without_trainable_variables_is_an_error():
    model = Dense(2, 1)
    for v in model.variables:
        v.trainable = False
    with pytest.raises(ValueError, match="no variable was given.*no trainable variables"):
        jv.grad(lambda: jnp.sum(model(jnp.ones((1, 2)))), model)()


def test_user_tracebacks_end_in_user_code():
    import traceback

    def user_function(x):
        raise RuntimeError("in user code")

    w = jv.Variable(1.0)
    calls = {
        "jit": lambda: jv.jit(user_function)(1.0),
        "grad": lambda: jv.grad(lambda: user_function(w), w)(),
        "fori_loop": lambda: jv.fori_loop(0, 2, lambda i, c: user_function(c), 0.0),
    }
    for call in calls.values():
        with pytest.raises(RuntimeError, match="in user code") as e:
            call()
        files = [frame.filename for frame in traceback.extract_tb(e.value.__traceback__)]
        assert files[-1] == __file__
        assert not any("/jaxvars/" in f for f in files), files
