"""What a notebook user sees of Modules, Variables, Stores and Optimizers (the Modules
guide): the facts, and the HTML rendered by a real browser (Chromium via Playwright)
inside a page styled like JupyterLab's output cells, light and dark."""

import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxvars as jv

ARTIFACTS = Path(__file__).resolve().parent.parent / ".ci" / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Dense(jv.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.w = jv.Variable(jnp.ones((n_in, n_out)), name="w")
        self.b = jv.Variable(jnp.zeros(n_out), name="b")


class Decoder(jv.Module):
    def __init__(self):
        super().__init__()
        self.inner = Dense(4, 2)
        mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
        sharding = NamedSharding(mesh, PartitionSpec("data", None))
        self.table = jv.Variable(
            jnp.arange(64.0).reshape(8, 8), dtype=jnp.bfloat16, sharding=sharding, name="table"
        )


class Net(jv.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Dense(3, 4)
        self.encoder.w.trainable = np.array([[True] * 4, [False] * 4, [True] * 4])
        self.decoder = Decoder()


def test_facts_in_words():
    net = Net()
    table = net.decoder.table
    assert jv._display.placement(table) == (
        "P('data', None) over 8 devices: dim 0 over data (4), dim 1 replicated"
    )
    mesh = table.sharding.mesh
    replicated = jv.Variable(jnp.ones(3), sharding=NamedSharding(mesh, PartitionSpec()))
    assert jv._display.placement(replicated) == "fully replicated over 8 devices"
    preview = jv._display.value_preview(table)  # bfloat16, sharded: reduced where it lives
    assert preview.startswith("min 0, mean 31.5, max 63")
    broken = jv.Variable(jnp.array([1.0, np.nan, np.inf, 2.0] * 5, jnp.float16))
    assert jv._display.value_preview(broken).endswith(", 5 NaN, 5 Inf")
    assert jv._display.plural(1, "variable") == "1 variable"
    scalar = jv.Variable(1.0, name="one")
    assert "1 value, 4 B" in scalar._repr_html_()

    class Tiny(jv.Module):
        def __init__(self):
            super().__init__()
            self.inner = Dense(1, 1)

    assert "inner · Dense · 2 params" in Tiny()._repr_html_()
    assert repr(jv.Store()).startswith("<jaxvars.Store with 0 variables")
    opt = jv.Optimizer(optax.adam(0.1), net.encoder)
    html = opt._repr_html_()
    assert "over 2 variables (16 values)" in html
    assert "State: 33 values, " in html and "parameters" not in html  # state, not parameters


PAGE = """<!doctype html><html><head><style>
/* What JupyterLab's rendered HTML does to tables: right-aligned cells, padding. */
:root {{ --jp-border-color2: {border}; }}
body {{ background: {background}; color: {text}; font-family: sans-serif; }}
.jp-RenderedHTMLCommon table {{ border: none; border-collapse: collapse; }}
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th {{
  text-align: right; vertical-align: middle; padding: 0.5em 0.5em; }}
</style></head><body><div class="jp-RenderedHTMLCommon">{html}</div></body></html>"""
THEMES = {
    "light": {"background": "#ffffff", "text": "rgba(0, 0, 0, 0.87)", "border": "#e0e0e0"},
    "dark": {"background": "#111111", "text": "rgba(255, 255, 255, 0.87)", "border": "#616161"},
}


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "the browser tests need the system Chromium: apt-get install -y chromium"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def _open(browser, theme):
    """The page: a nested Module, its Optimizer and a Store, as three outputs."""
    net = Net()
    opt = jv.Optimizer(optax.adam(0.1), net)
    store = jv.Store()
    with store:
        jv.get_variable("step", [], dtype=jnp.int32, initializer=jnp.zeros)
    card = net.decoder.table._repr_html_()
    outputs = (net._repr_html_(), opt._repr_html_(), store._repr_html_(), card)
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.set_content(PAGE.format(html="<hr>".join(outputs), **THEMES[theme]))
    return page


TEXT_X = """el => { const r = document.createRange(); r.selectNodeContents(el);
                    return r.getBoundingClientRect().left; }"""


def test_the_tree_is_indented_left_aligned_and_collapsible(browser):
    page = _open(browser, "light")
    parent = page.locator("summary", has_text="decoder · Decoder")
    child = page.locator("td", has_text="decoder/table").first
    assert child.evaluate(TEXT_X) > parent.evaluate(TEXT_X) + 5  # indented, in pixels
    aligns = page.eval_on_selector_all(
        "td, th", "cells => cells.map(c => getComputedStyle(c).textAlign)"
    )
    assert set(aligns) == {"left"}
    deep = page.locator("summary", has_text="decoder/inner · Dense")
    row = page.locator("td", has_text="decoder/inner/w").first
    assert not row.is_visible()  # deep levels start closed
    deep.click()
    assert row.is_visible()
    deep.click()
    assert not row.is_visible()
    assert page.locator("td", has_text="Total: 90 parameters").first.is_visible()
    # One column, one x: the tree's tables (a group each) line up, at every depth.
    deep.click()
    lefts = page.locator(".jp-RenderedHTMLCommon > div").first.evaluate(
        "d => [...d.querySelectorAll('tr')].filter(r => r.cells.length > 2)"
        ".map(r => Math.round(r.cells[2].getBoundingClientRect().left))"
    )
    assert len(lefts) == 6 and max(lefts) - min(lefts) <= 1, lefts  # the header and 5 rows
    assert page.locator(
        "b", has_text="Optimizer 'optimizer' (optax.chain) over 5 variables"
    ).is_visible()
    assert page.locator("b", has_text="Store with 1 variable").is_visible()
    page.close()


def _luminance(rgb):
    channels = [c / 255 for c in rgb]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _rgb(css, under=(255, 255, 255)):
    parts = [float(p) for p in css[css.index("(") + 1 : -1].split(",")]
    alpha = parts[3] if len(parts) == 4 else 1.0
    return [a * alpha + b * (1 - alpha) for a, b in zip(parts[:3], under, strict=True)]


@pytest.mark.parametrize("theme", list(THEMES))
def test_both_themes_are_readable_and_screenshotted(browser, theme):
    page = _open(browser, theme)
    background = _rgb(page.evaluate("getComputedStyle(document.body).backgroundColor"))
    for selector in ("td", "summary", "th"):
        color = _rgb(
            page.locator(selector).first.evaluate("e => getComputedStyle(e).color"), background
        )
        light, dark = sorted([_luminance(color), _luminance(background)], reverse=True)
        assert (light + 0.05) / (dark + 0.05) > 4.5, (theme, selector)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("summary", has_text="decoder/inner · Dense").click()  # one deep level open
    page.locator(".jp-RenderedHTMLCommon > div").first.screenshot(
        path=str(ARTIFACTS / f"display-{theme}.png")
    )
    assert os.path.getsize(ARTIFACTS / f"display-{theme}.png") > 5_000
    page.close()
