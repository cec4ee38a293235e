"""Property tests of the assign casting rule and of failure atomicity."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxvars as jv

DTYPES = [
    np.dtype(d)
    for d in (
        np.bool_,
        np.int8,
        np.int16,
        np.int32,
        np.uint8,
        np.uint16,
        np.uint32,
        np.float16,
        jnp.bfloat16,
        np.float32,
        np.complex64,
    )
]
dtypes = st.sampled_from(DTYPES)


@settings(max_examples=150, deadline=None)
@given(src=dtypes, dst=dtypes, data=st.data())
def test_strong_values_cast_exactly_when_numpy_same_kind_allows(src, dst, data):
    raw = data.draw(st.lists(st.integers(0, 3), min_size=3, max_size=3))
    value = np.asarray(raw).astype(src)
    v = jv.Variable(np.zeros(3, dst), name="p")
    before = v.value
    if np.can_cast(src, dst, "same_kind"):
        v.assign(value)
        assert v.dtype == dst and not v.value.weak_type
        np.testing.assert_array_equal(v.numpy(), value.astype(dst))
    else:
        with pytest.raises(TypeError, match=f"dtype {src} to variable 'p' of dtype {dst}"):
            v.assign(value)
        assert v.value is before


python_scalars = st.one_of(
    st.booleans(),
    st.integers(-5, 5),
    st.floats(-4, 4, width=16),
    st.complex_numbers(max_magnitude=4),
)


@settings(max_examples=150, deadline=None)
@given(scalar=python_scalars, dst=dtypes)
def test_python_scalars_fit_every_dtype_of_their_kind_or_wider(scalar, dst):
    kinds = [bool, int, float, complex]
    kind = kinds.index(type(scalar))
    dst_kind = [jnp.bool_, jnp.integer, jnp.floating, jnp.complexfloating]
    dst_rank = next(i for i, k in enumerate(dst_kind) if jnp.issubdtype(dst, k))
    fits = kind <= dst_rank and (dst_rank > 0 or kind == 0)
    unsigned_negative = jnp.issubdtype(dst, jnp.unsignedinteger) and kind == 1 and scalar < 0
    v = jv.Variable(np.zeros((), dst), name="s")
    before = v.value
    if fits and not unsigned_negative:
        v.assign(scalar)
        assert v.numpy() == np.asarray(scalar).astype(dst)
    else:
        with pytest.raises((TypeError, ValueError), match="'s'"):
            v.assign(scalar)
        assert v.value is before


values = st.one_of(
    st.floats(-10, 10, width=32),
    st.integers(-1000, 1000),
    st.lists(st.floats(-10, 10, width=32), min_size=0, max_size=4),
    st.lists(st.lists(st.integers(-3, 3), min_size=1, max_size=3), min_size=1, max_size=3),
    st.sampled_from(["text", None, [[1], [1, 2]], 1.5j]),
)


@settings(max_examples=200, deadline=None)
@given(
    initial=st.sampled_from(
        [np.zeros(3, np.float32), np.arange(3, dtype=np.int32), np.ones((2, 3), np.uint8)]
    ),
    op=st.sampled_from(["assign", "assign_add", "assign_sub", "setitem"]),
    value=values,
)
def test_an_assign_either_succeeds_or_changes_nothing(initial, op, value):
    v = jv.Variable(initial, name="atomic")
    before = v.value
    try:
        if op == "setitem":
            v[0] = value
        else:
            getattr(v, op)(value)
    except (TypeError, ValueError) as e:
        assert "'atomic'" in str(e)
        assert v.value is before
    else:
        assert v.shape == initial.shape and v.dtype == initial.dtype
        assert not v.value.weak_type
