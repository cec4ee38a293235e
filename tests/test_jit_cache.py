"""The jv.jit cache: keys, discovery, retry, donation and eviction (docs/how-it-works.md).

Each subtle line of jaxvars/_jit.py has a test here that fails without it.
"""

import contextlib
import gc
import logging
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from models import MLP, Dense

import jaxvars as jv

X = jnp.ones((4, 3))


@contextlib.contextmanager
def compiles(name="train_step"):
    """Count XLA compilations of the jv.jit function ``name`` (jax.log_compiles)."""
    names: list[str] = []

    class Handler(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith(f"Compiling jit({name})"):
                names.append(message)

    handler = Handler()
    logger = logging.getLogger("jax._src.interpreters.pxla")
    logger.addHandler(handler)
    try:
        with jax.log_compiles():
            yield names
    finally:
        logger.removeHandler(handler)


def loss(model, x):
    return jnp.sum(model(x) ** 2)


def train_step(model, x):
    grads = jv.grad(lambda: loss(model, x), model)()
    for variable, grad in zip(model.trainable_variables, grads, strict=True):
        variable.assign_sub(0.01 * grad)


# -- no recompiles ----------------------------------------------------------------------


def test_cached_calls_never_recompile_and_new_shapes_compile_once():
    model = Dense(3, 2)
    step = jv.jit(train_step)
    with compiles() as compiled:
        step(model, X)
        first = len(compiled)
        for i in range(5):
            model.w.assign(jnp.full((3, 2), float(i)))
            step(model, X * i)
        assert len(compiled) == first
        step(model, jnp.ones((7, 3)))
        assert len(compiled) == first + 1
    assert first >= 1


def test_holding_a_value_neither_reruns_python_nor_breaks_the_held_array():
    v = jv.Variable(jnp.arange(3.0), name="v")
    runs = []

    @jv.jit
    def step():
        runs.append(1)
        v.assign_add(1.0)

    step()
    traced = len(runs)
    held = v.value  # the next call cannot donate this buffer: it copies instead
    step()
    step()
    assert len(runs) == traced
    np.testing.assert_array_equal(held, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(v.numpy(), [3.0, 4.0, 5.0])


# -- eviction: only what depends on a changed object retraces -------------------------------


def test_building_an_unrelated_module_retraces_nothing():
    model = Dense(3, 2)
    runs = []

    @jv.jit
    def step(m, x):
        runs.append(1)
        return m(x)

    step(model, X)
    traced = len(runs)
    Dense(3, 2)  # sets attributes of a module that no compiled code uses
    MLP([3, 4, 1])
    step(model, X)
    assert len(runs) == traced


def test_a_module_that_sets_attributes_when_called_does_not_retrace_every_call():
    class Counting(jv.Module):
        def __init__(self):
            super().__init__()
            self.dense = Dense(3, 2)
            self.calls = jv.Variable(0, name="calls")

        def __call__(self, x):
            self.last_input_shape = x.shape  # plain Python state
            self.calls += 1  # in-place: the same Variable
            self.dense = self.dense  # the same object
            return self.dense(x)

    model = Counting()
    runs = []

    @jv.jit
    def step(m, x):
        runs.append(1)
        return m(x)

    for _ in range(4):
        step(model, X)
        model(X)  # eagerly too: the same assignments, outside any trace
    assert len(runs) == 1  # one trace, once
    assert int(model.calls) == 8


def test_changing_one_models_trainable_retraces_only_code_that_uses_it():
    a, b = Dense(3, 2, name="a"), Dense(3, 2, name="b")
    runs = {"a": 0, "b": 0}

    def counted(name):
        def step(m, x):
            runs[name] += 1
            train_step(m, x)

        return jv.jit(step)

    step_a, step_b = counted("a"), counted("b")
    step_a(a, X)
    step_b(b, X)
    before = dict(runs)
    b.w.trainable = False
    step_a(a, X)
    step_b(b, X)
    assert runs["a"] == before["a"]
    assert runs["b"] == before["b"] + 1  # one retrace
    frozen = b.w.numpy()
    step_b(b, X)
    np.testing.assert_array_equal(b.w.numpy(), frozen)


def test_replacing_a_closure_modules_variable_retraces():
    model = Dense(3, 1)

    @jv.jit
    def predict(x):
        return x @ model.w  # attribute access only, no method call

    predict(X)
    model.w = jv.Variable(jnp.full((3, 1), 2.0), name="w2")
    np.testing.assert_allclose(predict(X), np.full((4, 1), 6.0))


# -- lifetime: compiled code never keeps arguments alive ------------------------------------


def test_variable_arguments_are_freed_with_their_compiled_code():
    step = jv.jit(lambda v, w: v.assign_add(w))
    refs = []
    w = jv.Variable(jnp.ones(1024), name="w")  # read only
    for _ in range(20):
        v = jv.Variable(jnp.zeros(1024), name="v")
        step(v, w)
        refs.append(weakref.ref(v))
    np.testing.assert_array_equal(v.numpy(), np.ones(1024))
    del v
    gc.collect()
    assert all(ref() is None for ref in refs)
    assert len(step._jitted._cache) == 0


def test_code_compiled_for_one_model_never_keeps_an_earlier_model_alive():
    step = jv.jit(train_step)
    first, second = MLP([3, 4, 1]), MLP([3, 4, 1])
    step(first, X)
    step(second, X)  # a new key, traced expecting what the last trace touched
    dead = weakref.ref(first.layers[0].w)
    del first
    gc.collect()
    assert dead() is None and len(step._jitted._cache) == 1


def test_modules_given_as_arguments_are_freed():
    step = jv.jit(train_step)
    model = MLP([3, 4, 1])
    step(model, X)
    dead = weakref.ref(model.layers[0].w)
    del model
    gc.collect()
    assert dead() is None and len(step._jitted._cache) == 0


# -- retry, alternation, donation -------------------------------------------------------------


def test_a_miss_traces_once():
    model, runs = Dense(3, 2), []
    step = jv.jit(lambda m, x: (runs.append(1), train_step(m, x))[1])
    step(model, X)
    assert len(runs) == 1  # the one trace is the one compiled
    assert step.cache_info()._asdict() == {"traces": 1, "hits": 0, "misses": 1, "entries": 1}
    step(model, X * 2)
    assert len(runs) == 1 and step.cache_info().hits == 1


def test_a_retrace_for_new_shapes_traces_once_with_variable_arguments_too():
    v, runs = jv.Variable(0.0, name="v"), []

    @jv.jit
    def add(v, x):
        runs.append(1)
        v.assign_add(x.sum())
        return v * 1

    add(v, jnp.ones(2))
    add(v, jnp.ones(3))  # the same key (arrays key as None): jax.jit retraces
    assert float(v) == 5.0 and len(runs) == 2
    add(v, jnp.ones(3))
    assert float(v) == 8.0 and len(runs) == 2


def test_a_variable_the_trace_creates_and_uses_takes_a_second_trace_as_an_input():
    runs = []

    @jv.jit
    def f(x):
        runs.append(1)
        w = jv.get_variable("w_retry", (), initializer=jnp.ones)
        w.assign_add(x)
        return w * 10

    with jv.Store():
        assert float(f(2.0)) == 30.0
        assert len(runs) == 2  # it was made by the first trace: the second has it as an input
        (w,) = jv.global_variables()
        w.assign(0.0)
        assert float(f(1.0)) == 10.0  # an input on the cached call, not a frozen constant
        assert len(runs) == 2


def test_a_model_the_guess_cannot_see_takes_a_second_trace_and_then_stays_cached():
    import types

    model, runs = Dense(3, 2), []
    deep = types.SimpleNamespace(inner=types.SimpleNamespace(inner=types.SimpleNamespace()))
    deep.inner.inner.inner = types.SimpleNamespace(model=model)  # deeper than the guess looks

    @jv.jit
    def step(x):
        runs.append(1)
        return train_step(deep.inner.inner.inner.model, x)

    eager = Dense(3, 2)
    eager.w.assign(model.w.value)
    eager.b.assign(model.b.value)
    for i in range(3):
        step(X * (i + 1))
        train_step(eager, X * (i + 1))
    np.testing.assert_allclose(model.w.numpy(), eager.w.numpy(), rtol=1e-6)
    assert len(runs) == 2  # the second trace has the model's variables as inputs


def test_a_retrace_that_touches_a_variable_the_entry_lacks_makes_it_an_input():
    a, b = jv.Variable(1.0, name="a"), jv.Variable(10.0, name="b")
    runs = []

    @jv.jit
    def f(x):
        runs.append(1)
        if x.shape[0] > 1:  # Python control flow: only the wider trace touches b
            b.assign_add(x.sum())
        return a * x

    f(jnp.ones(1))
    assert float(b) == 10.0 and len(runs) == 1
    f(jnp.ones(2))  # the retrace finds b: it is traced again with b as an input
    assert float(b) == 12.0 and len(runs) == 3
    b.assign(0.0)
    f(jnp.ones(2))
    assert float(b) == 2.0 and len(runs) == 3  # read as an input, written back


def test_alternating_entries_never_mix_up_their_outputs():
    jv.random.set_seed(3)
    one, two = Dense(3, 2), Dense(3, 2)
    jv.random.set_seed(3)
    eager_one, eager_two = Dense(3, 2), Dense(3, 2)
    step = jv.jit(train_step)
    for i in range(4):
        x = X * (i + 1)
        step(one, x)
        step(two, x * 2)
        train_step(eager_one, x)
        train_step(eager_two, x * 2)
    np.testing.assert_allclose(one.w.numpy(), eager_one.w.numpy(), rtol=1e-5)
    np.testing.assert_allclose(two.w.numpy(), eager_two.w.numpy(), rtol=1e-5)


def test_repeated_calls_donate_and_reuse_their_outputs():
    v = jv.Variable(jnp.zeros(1000), name="v")
    step = jv.jit(lambda: v.assign_add(1.0), donate=True)
    step()
    pointer = v._array.unsafe_buffer_pointer()
    for _ in range(3):
        step()
    assert v._array.unsafe_buffer_pointer() == pointer  # updated in place: donated
    assert float(v[0]) == 4.0


# -- errors raised while running change nothing -------------------------------------------------


@pytest.mark.parametrize("kind", ["pure_callback", "debug_callback"])
def test_a_run_time_error_in_a_cached_call_changes_no_variable(kind):
    v = jv.Variable(jnp.arange(3.0), name="v")
    fail = [False]

    def check(x):
        if fail[0]:
            raise RuntimeError("boom")
        return x

    @jv.jit
    def step():
        v.assign_add(1.0)
        if kind == "pure_callback":
            return jax.pure_callback(check, jax.ShapeDtypeStruct((3,), jnp.float32), v.value)
        jax.debug.callback(check, v.value)
        return v * 1

    step()
    step()
    before = v.numpy()
    fail[0] = True
    with pytest.raises(Exception, match="boom"):
        step()
    np.testing.assert_array_equal(v.numpy(), before)  # neither deleted nor changed
    fail[0] = False
    step()
    np.testing.assert_array_equal(v.numpy(), before + 1)


# -- returned variables -----------------------------------------------------------------------


def test_a_returned_variable_is_the_variable_itself_with_its_new_value():
    v = jv.Variable(0.0, name="v")
    w = jv.Variable(5.0, name="w")

    @jv.jit
    def step(x):
        v.assign_add(x)
        return v, {"w": w, "double": v * 2}, [v]

    for i in range(1, 4):
        out, parts, listed = step(float(i))
        assert out is v and parts["w"] is w and listed[0] is v
    assert float(out) == 6.0 and float(parts["double"]) == 12.0


def test_a_returned_variable_does_not_keep_it_alive():
    step = jv.jit(lambda v: v)
    v = jv.Variable(1.0)
    assert step(v) is v
    ref = weakref.ref(v)
    del v
    gc.collect()
    assert ref() is None


# -- errors name the variables ----------------------------------------------------------------


def test_device_mismatch_errors_name_the_variables():
    a = jv.Variable(1.0, name="a", device="cpu:0")
    b = jv.Variable(2.0, name="b", device="cpu:1")
    with pytest.raises(
        ValueError, match=r"(?s)variable 'a': device=cpu:0.*variable 'b': device=cpu:1"
    ) as e:
        jv.jit(lambda: a.assign_add(b))()
    assert isinstance(e.value, jv.JaxvarsError)
    assert "argument" not in str(e.value).split("\n")[1]
    assert float(a) == 1.0


def test_variables_created_on_every_trace_are_a_value_error():
    @jv.jit
    def f():
        return jv.Variable(1.0, name="fresh") * 2

    with pytest.raises(ValueError, match="'fresh' is created on every trace") as e:
        f()
    assert isinstance(e.value, jv.JaxvarsError)


def test_growing_an_empty_list_of_a_closure_module_retraces():
    class Sum(jv.Module):
        def __init__(self):
            super().__init__()
            self.terms = []

        def __call__(self):
            return sum((v.value for v in self.terms), jnp.zeros(()))

    model = Sum()
    total = jv.jit(lambda: model())
    assert float(total()) == 0.0
    model.terms.append(jv.Variable(4.0, name="term"))
    assert float(total()) == 4.0


def test_tracing_errors_name_the_users_function_and_argument():
    model = Dense(3, 2)

    @jv.jit
    def my_step(model, x, training=True):
        if training:  # a Python branch on a traced flag: JAX's tracing error
            return model(x)
        return x

    with pytest.raises(jax.errors.TracerBoolConversionError) as e:
        my_step(model, X, training=jnp.array(True))  # an array flag is traced
    message = str(e.value)
    assert "tracing the function my_step at" in message and __file__ in message
    assert "argument training" in message
    assert "jaxvars/" not in message.split("See https")[0]


# -- one trace per miss, in the patterns users write (found by review) -------------------------


def test_alternating_shapes_settle_at_two_compiled_shapes():
    a, b, runs = jv.Variable(1.0, name="a"), jv.Variable(10.0, name="b"), []

    @jv.jit
    def f(x):
        runs.append(1)
        return x + (b if x.shape[0] > 2 else a)  # each shape reads another variable

    for n in (2, 3, 2, 3, 2, 3):
        np.testing.assert_array_equal(f(jnp.zeros(n)), np.full(n, 10.0 if n > 2 else 1.0))
    assert len(runs) == 2 and f.cache_info().hits == 4
    b.assign(5.0)
    np.testing.assert_array_equal(f(jnp.zeros(3)), [5.0] * 3)  # an input, not a constant


def test_a_step_drawing_randomness_traces_once():
    jv.random.normal(())  # the stream exists, as in any program that made a model
    model, runs = Dense(3, 2), []

    @jv.jit
    def step(m, x):
        runs.append(1)
        return m(x * jv.random.uniform(x.shape))

    first, second = step(model, X), step(model, X)
    assert len(runs) == 1 and not np.array_equal(first, second)  # the stream advanced


def test_a_module_holding_its_optimizer_traces_once():
    class Net(jv.Module):
        def __init__(self):
            super().__init__()
            self.dense = Dense(3, 2)
            self.opt = jv.Optimizer(optax.sgd(0.01), self.dense)
            self.runs = []

        @jv.jit
        def train(self, x):
            self.runs.append(1)
            loss, grads = jv.value_and_grad(lambda: jnp.sum(self.dense(x) ** 2), self.dense)()
            self.opt.apply_gradients(grads)
            return loss

    net = Net()
    losses = [float(net.train(X)) for _ in range(3)]
    assert len(net.runs) == 1 and losses[2] < losses[0]


def test_objects_that_cannot_be_looked_into_do_not_break_the_guess():
    class Unlookable:
        """Like a web framework's request proxy: looking inside it raises."""

        def __getattribute__(self, name):
            raise RuntimeError("working outside of request context")

    proxy, v = Unlookable(), jv.Variable(1.0, name="v")

    def f(x):
        if x is proxy:  # refers to it, never uses it
            return x
        return v + x

    assert float(jv.jit(f)(1.0)) == 2.0


def test_a_parameter_named_like_the_traces_inputs_works():
    v = jv.Variable(1.0, name="v")
    assert (
        float(jv.jit(lambda _jaxvars_variable_0, x: v + x + _jaxvars_variable_0)(1.0, 2.0)) == 4.0
    )
