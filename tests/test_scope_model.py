"""Random sequences of create/get in nested scopes behave like a reference dict model."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxvars as jv

REUSE = [None, True, jv.AUTO_REUSE]
op = st.tuples(
    st.lists(st.sampled_from(["a", "b"]), min_size=0, max_size=2),  # scope path
    st.sampled_from(REUSE),  # reuse of the innermost scope
    st.sampled_from(["v", "w"]),  # variable name
    st.sampled_from([(1,), (2,)]),  # shape asked for
)


@settings(max_examples=150, deadline=None)
@given(st.lists(op, max_size=12))
def test_scopes_behave_like_a_dict(ops):
    store = jv.Store()
    model: dict[str, tuple[int, ...]] = {}
    with store:
        for path, reuse, name, shape in ops:
            full = "/".join([*path, name])
            effective = reuse if path else None  # no scope opened: top level creates
            if effective is None:
                expected = "create" if full not in model else "exists"
            elif effective is True:
                expected = "get" if full in model else "missing"
            else:
                expected = "get" if full in model else "create"
            if expected == "get" and model[full] != shape:
                expected = "shape"
            try:
                with _scopes(path, reuse):
                    v = jv.get_variable(name, shape)
            except ValueError as e:
                message = str(e)
                assert f"'{full}'" in message
                outcome = {
                    "already exists": "exists",
                    "does not exist": "missing",
                    "specified shape": "shape",
                }
                assert expected == next(o for k, o in outcome.items() if k in message)
            else:
                assert expected in ("create", "get"), (expected, full)
                assert v.name == full and v.shape == model.setdefault(full, shape)
                assert store[full] is v
    assert sorted(store) == sorted(model)
    assert all(np.shape(store[n].value) == s for n, s in model.items())


def _scopes(path, reuse):
    import contextlib

    stack = contextlib.ExitStack()
    for i, part in enumerate(path):
        stack.enter_context(jv.variable_scope(part, reuse=reuse if i == len(path) - 1 else None))
    return stack
