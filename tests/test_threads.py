"""Variables, jv.jit and stores used from several threads (docs/troubleshooting.md, Threads)."""

import threading

import jax
import jax.numpy as jnp
import numpy as np
from models import MLP

import jaxvars as jv


def run_threads(*targets):
    """Run each target in its own thread; re-raise the first exception any raised."""
    errors = []

    def guarded(target):
        try:
            target()
        except BaseException as e:  # reported in the main thread
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_eight_threads_sharing_one_jitted_step_lose_no_update():
    counter = jv.Variable(0, name="counter")
    total = jv.Variable(jnp.zeros(64), name="total")

    @jv.jit(donate=True)  # the buffers are donated: what these tests guard
    def step(x):
        counter.assign_add(1)
        total.assign_add(x)

    def worker():
        for _ in range(50):
            step(jnp.ones(64))

    step(jnp.zeros(64))  # compiled before the threads start
    run_threads(*[worker] * 8)
    assert int(counter) == 401
    np.testing.assert_array_equal(total.numpy(), np.full(64, 400.0))


def test_reading_values_while_another_thread_trains():
    model = MLP([8, 16, 1])
    x = jnp.ones((4, 8))

    @jv.jit(donate=True)  # the buffers are donated: what these tests guard
    def step():
        grads = jv.grad(lambda: jnp.sum(model(x) ** 2), model)()
        for v, g in zip(model.trainable_variables, grads, strict=True):
            v.assign_sub(1e-3 * g)

    step()
    done = threading.Event()
    seen = []

    def train():
        try:
            for _ in range(20_000):  # bounded, should the reader die
                if len(seen) >= 200:
                    break
                step()
        finally:
            done.set()

    def read():
        while not done.is_set():
            seen.append(float(jnp.sum(model.layers[0].w.value)))  # never a deleted array

    run_threads(train, read)
    assert seen and all(np.isfinite(seen))


def test_saving_in_the_background_while_training(tmp_path):
    v = jv.Variable(jnp.zeros(10_000), name="v")
    step = jv.jit(lambda: v.assign_add(1.0), donate=True)
    step()
    saved = threading.Event()
    path = str(tmp_path / "ckpt.safetensors")

    def train():
        for _ in range(20_000):  # bounded, should the saver die
            if saved.is_set():
                break
            step()

    def save():
        try:
            for _ in range(20):
                jv.save(path, [v])
        finally:
            saved.set()

    run_threads(train, save)
    jv.restore(path, [v])
    value = v.numpy()
    assert value[0] >= 1.0 and (value == value[0]).all()  # one consistent snapshot


def test_eager_draws_beside_jitted_draws_never_repeat_a_key():
    keys = []
    lock = threading.Lock()

    @jv.jit(donate=True)  # the buffers are donated: what these tests guard
    def jitted_draw():
        return jv.random.next_key()

    jitted_draw()

    def jitted():
        for _ in range(100):
            key = tuple(np.asarray(jitted_draw()).tolist())
            with lock:
                keys.append(key)

    def eager():
        for _ in range(100):
            key = tuple(np.asarray(jv.random.next_key()).tolist())
            with lock:
                keys.append(key)

    run_threads(jitted, eager, eager)
    assert len(set(keys)) == len(keys) == 300


def test_eager_assignments_beside_a_jitted_step_lose_no_update():
    v = jv.Variable(0.0, name="v")
    step = jv.jit(lambda: v.assign_add(1.0), donate=True)
    step()

    def jitted():
        for _ in range(200):
            step()

    def eager():
        for _ in range(200):
            v.assign_add(1.0)

    run_threads(jitted, eager)
    assert float(v) == 401.0


def test_store_views_while_another_thread_creates_variables():
    store = jv.Store()
    done = threading.Event()
    sizes = []

    def create():
        with store, jax.default_device(jax.devices()[0]):
            for i in range(300):
                jv.get_variable(f"v{i}", initializer=float(i))
        done.set()

    def view():
        while not done.is_set():
            state = store.state()
            trainable = store.trainable_variables()
            names = list(store)
            sizes.append((len(state), len(trainable), len(names)))

    run_threads(create, view)
    assert len(store.state()) == 300
    assert all(n >= 0 for sizes_ in sizes for n in sizes_)


def test_creating_variables_beside_a_step_that_gets_variables_never_deadlocks():
    store = jv.Store()

    @jv.jit(donate=True)  # the buffers are donated: what these tests guard
    def step(x):
        with store, jv.variable_scope("model", reuse=jv.AUTO_REUSE):
            w = jv.get_variable("w", (4,))  # takes the store's lock inside a step
            return x * w

    def run_steps():
        for i in range(100):
            step(jnp.ones((i % 7 + 1, 4)))  # a new shape traces, under the state lock

    def create():
        with store:
            for i in range(200):  # each creation draws a random key
                jv.get_variable(f"other/v{i}", (2,))

    threads = [threading.Thread(target=t, daemon=True) for t in (run_steps, create)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "deadlocked"
    assert len(store) == 201


def test_a_watched_object_dying_while_the_dependents_lock_is_held_does_not_deadlock():
    """The collector can free a watched object inside ``depend``, on the thread
    holding the lock; the object's weak-reference callback takes the lock too."""
    from jaxvars import _trace

    class Entry:
        def evict(self):
            pass

    class Watched:
        pass

    entry, holder = Entry(), [Watched()]
    _trace.depend(entry, holder)
    finished = threading.Event()

    def die_under_the_lock():
        with _trace._dependents_lock:
            holder.clear()  # the last reference: the callback runs here, now
        finished.set()

    threading.Thread(target=die_under_the_lock, daemon=True).start()
    assert finished.wait(timeout=60), "deadlock: the callback could not take the lock"
