"""jv.Module (API.md section 3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from models import Dense

import jaxvars as jv


class MyBlock(jv.Module):
    def __init__(self):
        super().__init__()
        self.first = Dense(2, 3)
        self.scale = jv.Variable(1.0, name="scale", trainable=False)
        self.layers = [Dense(3, 3), (Dense(3, 1),)]
        self.by_name = {"shared": self.first, "extra": jv.Variable(0.0, name="extra")}


def test_auto_names_are_snake_case_and_unique():
    names = [Dense(1, 1).name, Dense(1, 1).name, MyBlock().name, MyBlock().name]
    assert names[:2] == ["dense", "dense_1"]
    assert names[2:] == ["my_block", "my_block_1"]
    assert Dense(1, 1, name="custom").name == "custom"


def test_variables_in_attribute_order_with_submodules_in_place_and_no_duplicates():
    block = MyBlock()
    assert list(block.named_variables()) == [
        "first/w",
        "first/b",
        "scale",
        "layers/0/w",
        "layers/0/b",
        "layers/1/0/w",
        "layers/1/0/b",
        "by_name/extra",
    ]
    assert block.variables == tuple(block.named_variables().values())
    assert [v.name for v in block.variables][:3] == [
        "my_block/dense/w",
        "my_block/dense/b",
        "my_block/scale",
    ]
    assert all(v is not block.scale for v in block.trainable_variables)
    assert len(block.trainable_variables) == 7


def test_submodules_pre_order_depth_first():
    class Outer(jv.Module):
        def __init__(self):
            super().__init__()
            self.block = MyBlock()
            self.head = Dense(1, 1)

    outer = Outer()
    assert outer.submodules == (
        outer.block,
        outer.block.first,
        outer.block.layers[0],
        outer.block.layers[1][0],
        outer.head,
    )


def test_paths_are_identical_for_identical_models():
    a, b = MyBlock(), MyBlock()
    assert a.name != b.name
    assert list(a.named_variables()) == list(b.named_variables())


def test_a_variable_shared_by_two_submodules_appears_once():
    class Tied(jv.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Dense(2, 2)
            self.decoder = Dense(2, 2)
            self.decoder.w = self.encoder.w

    tied = Tied()
    assert list(tied.named_variables()) == ["encoder/w", "encoder/b", "decoder/b"]


def test_masked_variables_count_as_trainable():
    layer = Dense(2, 2)
    layer.w.trainable = np.array([[True, False], [False, False]])
    layer.b.trainable = False
    assert layer.trainable_variables == (layer.w,)


def test_get_variable_in_a_method_lives_under_the_module_scope_and_is_reused():
    class Lazy(jv.Module):
        def __call__(self, x):
            w = jv.get_variable("w", (x.shape[-1], 2))
            return x @ w

    with jv.variable_scope("net"):
        lazy = Lazy()
    x = jnp.ones((1, 3))
    first = lazy(x)
    np.testing.assert_array_equal(lazy(x), first)
    assert list(jv.default_store()) == ["net/lazy/w"]
    assert lazy.scope_name == "net/lazy"


def test_nested_module_scopes_follow_construction():
    class Outer(jv.Module):
        def __init__(self):
            super().__init__()
            self.inner = Dense(1, 1)

    outer = Outer()
    assert outer.inner.scope_name == "outer/dense"
    assert outer.inner.w.name == "outer/dense/w"


def test_a_module_that_skips_super_init_is_still_named():
    class Bare(jv.Module):
        def __init__(self):
            self.v = jv.Variable(1.0, name="v")

    bare = Bare()
    assert bare.name == "bare" and bare.v.name == "bare/v"


def test_summary_prints_the_submodule_tree_with_subtotals_and_totals():
    block = MyBlock()
    block.first.w.trainable = np.array([[True, False, False], [True, False, False]])
    lines = []
    block.summary(print_fn=lines.append)
    rows = [line.split() for line in lines]
    assert lines[0] == "MyBlock 'my_block'"
    assert rows[1] == [
        "path",
        "class",
        "/",
        "shape",
        "dtype",
        "trainable",
        "placement",
        "params",
        "bytes",
    ]
    # A submodule row (class, subtotal), then its variables indented under it.
    assert rows[2] == ["first", "Dense", "9", "36", "B"]
    assert rows[3] == [
        "first/w",
        "(2,",
        "3)",
        "float32",
        "mask",
        "33.3%",
        "cpu:0",
        "(uncommitted)",
        "6",
        "24",
        "B",
    ]
    assert lines[3].startswith("  first/w")
    assert ["scale", "()", "float32", "False", "cpu:0", "(uncommitted)", "1", "4", "B"] in rows
    assert ["layers/1/0", "Dense", "4", "16", "B"] in rows
    total = 6 + 3 + 1 + 9 + 3 + 3 + 1 + 1
    assert lines[-1] == (
        f"Total: {total} parameters, {4 * total} B ({total - 4 - 1} trainable, 5 non-trainable)"
    )


def test_summary_shows_shardings():
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()), ("data",))
    layer = Dense(8, 2)
    layer.w = jv.Variable(jnp.ones((8, 2)), sharding=NamedSharding(mesh, PartitionSpec("data")))
    lines = []
    layer.summary(print_fn=lines.append)
    assert "P('data',) over 8 devices" in "\n".join(lines)


def test_html_reprs_of_module_variable_store_and_optimizer():
    import optax

    block = MyBlock()
    html = block._repr_html_()
    assert "<table" in html and ">layers/1/0/w</td>" in html and "layers/1/0 · Dense" in html
    assert repr(block) == "MyBlock(name='my_block', parameters=27)"
    w = block.first.w
    w.trainable = np.array([[True, False, False], [True, False, False]])
    variable_html = w._repr_html_()
    assert "Variable &#x27;my_block/dense/w&#x27;" in variable_html
    assert "mask 33.3%" in variable_html and "cpu:0 (uncommitted)" in variable_html
    big = jv.Variable(jnp.arange(100.0), name="big")._repr_html_()
    assert "min 0, mean 49.5, max 99" in big  # statistics, not 100 values
    store = jv.Store()
    with store:
        jv.get_variable("v", [3])
    assert "Store with 1 variable<" in store._repr_html_() and ">v</td>" in store._repr_html_()
    opt = jv.Optimizer(optax.sgd(0.1), block)
    assert "iterations=0" in opt._repr_html_() and "optimizer/iterations" in opt._repr_html_()
    assert repr(opt).startswith("<jaxvars.Optimizer 'optimizer' (optax.")


def test_modules_compose_in_calls():
    layer = Dense(2, 1)
    layer.w.assign([[1.0], [2.0]])
    np.testing.assert_array_equal(layer(jnp.array([[1.0, 1.0]])), [[3.0]])


@pytest.mark.parametrize(
    "name, expected",
    [("MLP", "mlp"), ("MyBlock", "my_block"), ("HTTPServer2", "http_server2"), ("x", "x")],
)
def test_snake_case(name, expected):
    cls = type(name, (jv.Module,), {})
    assert cls().name == expected


@pytest.mark.parametrize(
    "holder",
    [
        lambda x, y: {"a/b": x, "a": {"b": y}},
        lambda x, y: {1: x, "1": y},
        lambda x, y: {"0/1": x, "0": [None, y]},
    ],
    ids=["slash-in-key", "int-and-str-key", "list-index-and-key"],
)
def test_colliding_paths_are_refused_never_dropped(holder):
    class Holder(jv.Module):
        def __init__(self):
            super().__init__()
            self.parts = holder(jv.Variable(1.0, name="x"), jv.Variable(2.0, name="y"))

    model = Holder()
    with pytest.raises(ValueError, match="'holder/x' and 'holder/y' both have the path") as e:
        model.named_variables()
    assert isinstance(e.value, jv.JaxvarsError)
    with pytest.raises(ValueError, match="both have the path"):
        model.variables  # noqa: B018


def test_an_attribute_named_like_a_path_is_refused():
    class Odd(jv.Module):
        def __init__(self):
            super().__init__()
            self.layers = [Dense(1, 1)]
            setattr(self, "layers/0", {"w": jv.Variable(jnp.zeros((1, 1)), name="shadow")})

    with pytest.raises(ValueError, match="path 'layers/0/w'"):
        Odd().named_variables()


def test_a_name_passed_positionally_is_the_modules_name():
    class Named(jv.Module):
        def __init__(self, name, size):
            super().__init__(name=name)
            self.w = jv.Variable(jnp.zeros(size), name="w")

    with jv.Store():
        by_position = Named("encoder", 2)
        by_keyword = Named(name="decoder", size=2)
        layer = Dense(1, 1, 1.0, "head")
    assert by_position.name == "encoder" and by_position.w.name == "encoder/w"
    assert by_keyword.name == "decoder" and layer.name == "head"
    assert layer.w.name == "head/w"
