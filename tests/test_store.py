"""The Store registry (API.md section 2)."""

import re
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvars as jv


def make_store():
    store = jv.Store()
    with store, jv.variable_scope("a"):
        jv.get_variable("w", initializer=np.ones((2, 2), np.float32))
        jv.get_variable("b", initializer=np.zeros(2, np.float32), trainable=False)
        jv.get_variable("m", initializer=np.zeros(3, np.float32), trainable=[True, False, True])
    return store


def test_store_is_a_read_only_mapping_of_full_names():
    store = make_store()
    assert list(store) == ["a/w", "a/b", "a/m"]
    assert len(store) == 3 and "a/w" in store and "w" not in store
    assert store["a/w"].name == "a/w"
    assert dict(store.items())["a/b"] is store["a/b"]
    with pytest.raises(KeyError, match="No variable named 'zzz' in this store"):
        store["zzz"]
    assert "3 variables" in repr(store)


def test_variables_and_trainable_variables_in_creation_order():
    store = make_store()
    assert [v.name for v in store.variables()] == ["a/w", "a/b", "a/m"]
    assert [v.name for v in store.trainable_variables()] == ["a/w", "a/m"]


def test_stores_compare_and_hash_by_identity():
    first, second = jv.Store(), jv.Store()
    assert first != second and first == first
    assert len({first, second}) == 2


def test_with_store_activates_and_nests():
    outer, inner = jv.Store(), jv.Store()
    with outer:
        jv.get_variable("x", [1])
        with inner:
            jv.get_variable("x", [1])
        with pytest.raises(ValueError, match="'x' already exists"):
            jv.get_variable("x", [1])
    assert list(outer) == ["x"] and list(inner) == ["x"]
    assert len(jv.default_store()) == 0
    assert outer["x"] is not inner["x"]


def test_state_and_load_state_round_trip():
    store = make_store()
    state = store.state()
    assert set(state) == {"a/w", "a/b", "a/m"}
    assert all(isinstance(x, jax.Array) for x in state.values())
    store.load_state(
        {"a/w": 2 * np.ones((2, 2), np.float32), "a/b": np.ones(2, np.float32), "a/m": jnp.ones(3)}
    )
    np.testing.assert_array_equal(store["a/w"].numpy(), 2 * np.ones((2, 2)))
    store.load_state(state)
    np.testing.assert_array_equal(store["a/w"].numpy(), np.ones((2, 2)))


def test_load_state_lists_every_problem_and_changes_nothing():
    store = make_store()
    before = {name: v.value for name, v in store.items()}
    bad = {
        "a/w": np.ones((3, 3), np.float32),
        "a/b": np.ones(2, np.int32),
        "extra": np.ones(1),
    }
    with pytest.raises(ValueError) as info:
        store.load_state(bad)
    message = str(info.value)
    assert "3 problem(s)" not in message  # four: missing a/m, extra, shape, dtype
    for part in (
        "4 problem(s), nothing was changed",
        "missing key 'a/m'",
        "unexpected key 'extra'",
        "'a/w': shape (3, 3) in the state, (2, 2) in the variable",
        "'a/b': dtype int32 in the state, float32 in the variable",
    ):
        assert part in message, message
    assert all(store[name].value is value for name, value in before.items())


def test_load_state_non_strict_ignores_unexpected_keys_only():
    store = make_store()
    state = {**store.state(), "extra": np.ones(1), "ragged": [[1], [1, 2]]}  # not looked into
    store.load_state(state, strict=False)
    with pytest.raises(ValueError, match=re.escape("missing key 'a/b'")):
        store.load_state({"a/w": np.ones((2, 2), np.float32)}, strict=False)


def test_store_is_a_pytree_whose_leaves_are_values():
    store = make_store()
    leaves = jax.tree.leaves(store)
    assert [leaf is v.value for leaf, v in zip(leaves, store.variables(), strict=True)] == [
        True
    ] * 3
    shapes = jax.tree.map(lambda x: x.shape, store)
    assert shapes == {"a/w": (2, 2), "a/b": (2,), "a/m": (3,)}
    total = jax.jit(lambda s: sum(jnp.sum(x) for x in jax.tree.leaves(s)))(store)
    assert float(total) == 4.0
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(store)]
    assert paths == ["['a/w'].value", "['a/b'].value", "['a/m'].value"]


def test_clear_and_reset_default_store_allow_notebook_reruns():
    def cell():
        with jv.variable_scope("model"):
            return jv.get_variable("w", [2])

    first = cell()
    with pytest.raises(ValueError, match="already exists"):
        cell()
    jv.reset_default_store()
    second = cell()
    assert second is not first and jv.default_store()["model/w"] is second
    np.testing.assert_array_equal(first.assign([1.0, 2.0]).numpy(), [1.0, 2.0])  # still usable
    store = jv.Store()
    with store:
        cell()
    store.clear()
    assert len(store) == 0


def test_concurrent_auto_reuse_creates_each_variable_once():
    store = jv.Store()
    found = []

    def worker():
        with store, jv.variable_scope("shared", reuse=jv.AUTO_REUSE):
            found.append(jv.get_variable("v", [4]))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store) == 1 and all(v is found[0] for v in found)
