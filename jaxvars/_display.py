"""How variables, modules, stores and optimisers show themselves: text tables and HTML.

One set of facts per variable (shape, dtype, trainable setting, placement,
size) feeds ``module.summary()``, the notebooks' ``_repr_html_`` of Variable,
Module, Store and Optimizer, so they always agree.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

if TYPE_CHECKING:
    from ._variable import Variable

COLUMNS = ("path", "class / shape", "dtype", "trainable", "placement", "params", "bytes")


def trainable_label(variable: Variable) -> str:
    """``True``, ``False``, or ``mask 37.5%`` (the share of trainable elements)."""
    trainable = variable.trainable
    if isinstance(trainable, bool):
        return str(trainable)
    return f"mask {100 * float(np.mean(np.asarray(trainable))):.1f}%"


def placement(variable: Variable) -> str:
    """``cpu:0``, ``cpu:0 (uncommitted)``, ``P('data', None) over 8 devices: dim 0 over
    data (4), dim 1 replicated``, ``fully replicated over 8 devices`` or ``abstract``."""
    if variable.is_abstract:
        return "abstract"
    sharding = variable._array.sharding
    devices = sharding.device_set
    if len(devices) > 1:
        if not isinstance(sharding, NamedSharding):
            return f"{type(sharding).__name__} over {len(devices)} devices"
        spec = tuple(sharding.spec) + (None,) * (len(variable.shape) - len(sharding.spec))
        if all(axes is None for axes in spec):
            return f"fully replicated over {len(devices)} devices"
        sizes = dict(sharding.mesh.shape)
        dims = []
        for dim, axes in enumerate(spec):
            names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
            split = " x ".join(f"{name} ({sizes[name]})" for name in names)
            dims.append(f"dim {dim} over {split}" if names else f"dim {dim} replicated")
        return f"{sharding.spec} over {len(devices)} devices: {', '.join(dims)}"
    device = next(iter(devices))
    where = f"{device.platform}:{device.id}"
    return where if variable._array.committed else f"{where} (uncommitted)"


def plural(count: int, noun: str) -> str:
    """``1 variable``, ``2 variables``, ``1,024 values``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def size_in_bytes(count: int) -> str:
    """``512 B``, ``4.0 KiB``, ``1.5 GiB``."""
    if count < 1024:
        return f"{count} B"
    size = count / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def variable_row(path: str, variable: Variable, depth: int = 0) -> tuple[int, tuple[str, ...]]:
    nbytes = variable.size * variable.dtype.itemsize
    cells = (
        path,
        str(variable.shape),
        str(variable.dtype),
        trainable_label(variable),
        placement(variable),
        f"{variable.size:,}",
        size_in_bytes(nbytes),
    )
    return depth, cells


def module_summary(
    module: Any, variables: list[tuple[str, Variable]], modules: list[tuple[str, Any]]
) -> tuple[str, list[tuple[int, tuple[str, ...]]], str]:
    """A Module's title, tree rows (each submodule before its first variable, with its
    subtotal) and totals, from its walk's ``(path, variable)`` and ``(path, module)``."""
    owner = dict(modules)
    rows: list[tuple[int, tuple[str, ...]]] = []
    shown: set[str] = set()
    for path, variable in variables:
        parts = path.split("/")
        # The submodules enclosing the variable, outermost first.
        enclosing = [p for p in ("/".join(parts[:i]) for i in range(1, len(parts))) if p in owner]
        for depth, prefix in enumerate(enclosing):  # each once, before its first variable
            if prefix not in shown:
                shown.add(prefix)
                inner = owner[prefix].variables
                count = sum(v.size for v in inner)
                nbytes = sum(v.size * v.dtype.itemsize for v in inner)
                cells = (prefix, type(owner[prefix]).__name__, "", "", "", f"{count:,}")
                rows.append((depth, (*cells, size_in_bytes(nbytes))))
        rows.append(variable_row(path, variable, len(enclosing)))
    title = f"{type(module).__name__} '{module.name}'"
    return title, rows, totals(v for _, v in variables)


def totals(variables: Iterable[Variable]) -> str:
    """``Total: 1,234 parameters, 4.8 KiB (1,000 trainable, 234 non-trainable)``."""
    total = trainable = nbytes = 0
    for v in variables:
        total += v.size
        nbytes += v.size * v.dtype.itemsize
        mask = v.trainable
        trainable += v.size if mask is True else 0 if mask is False else int(np.sum(mask))
    return (
        f"Total: {plural(total, 'parameter')}, {size_in_bytes(nbytes)} ({trainable:,} "
        f"trainable, {total - trainable:,} non-trainable)"
    )


def state_totals(variables: Iterable[Variable]) -> str:
    """``State: 2,468 values, 9.6 KiB``: an optimiser's state is not parameters."""
    variables = list(variables)
    count = sum(v.size for v in variables)
    nbytes = sum(v.size * v.dtype.itemsize for v in variables)
    return f"State: {plural(count, 'value')}, {size_in_bytes(nbytes)}"


def text_table(title: str, rows: list[tuple[int, tuple[str, ...]]], footer: str) -> list[str]:
    """Lines of an aligned table; each row's first cell indented by its depth."""
    cells = [COLUMNS, *[("  " * depth + row[0], *row[1:]) for depth, row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = [title]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    lines.append(footer)
    return lines


_CELL = "text-align:left;padding:0.15em 0.6em;white-space:nowrap;overflow:hidden"
_RULE = "border-bottom:1px solid var(--jp-border-color2, rgba(128, 128, 128, 0.35))"
_INDENT = 1.2  # em per level of the tree
_MARKER = 1.8  # em: a summary's padding (0.6) and its disclosure triangle


def html_table(title: str, rows: list[tuple[int, tuple[str, ...]]], footer: str) -> str:
    """The same table as HTML, for notebooks: every cell left-aligned and indented
    by inline styles (which notebook stylesheets, right-aligning table cells, do not
    override), submodules as ``<details>`` (the outer ones open), colours inherited
    from the page (light or dark theme), and a total row."""
    widths = [max([len(c), *(len(row[i]) for _, row in rows)]) + 2 for i, c in enumerate(COLUMNS)]
    # The first column holds the indent too, in em as the padding is: one width for
    # every table of the tree, so their columns line up.
    indent = _MARKER + _INDENT * max((depth for depth, _ in rows), default=0)
    columns = f"<col style='width:calc({widths[0]}ch + {indent:.1f}em)'>"
    columns += "".join(f"<col style='width:{w}ch'>" for w in widths[1:])
    table = f"<table style='table-layout:fixed;border-collapse:collapse;margin:0'>{columns}"

    def cells(row: tuple[str, ...], depth: int, tag: str = "td", style: str = "") -> str:
        # Past the disclosure triangle of a submodule's summary at the same depth.
        first = f"{_CELL};padding-left:{_MARKER + _INDENT * depth:.1f}em;{style}"
        rest = "".join(f"<{tag} style='{_CELL};{style}'>{html.escape(c)}</{tag}>" for c in row[1:])
        return f"<tr><{tag} style='{first}'>{html.escape(row[0])}</{tag}>{rest}</tr>"

    out = [f"<div style='color:inherit'><p><b>{html.escape(title)}</b></p>"]
    out.append(f"{table}{cells(COLUMNS, 0, 'th', _RULE)}</table>")
    open_depths: list[int] = []  # the <details> still open, by depth
    variables: list[str] = []  # rows waiting for their table

    def flush() -> None:
        if variables:
            out.append(table + "".join(variables) + "</table>")
            variables.clear()

    for depth, row in rows:
        if row[2] == "":  # a submodule: its class and subtotal, a collapsible group
            flush()
            while open_depths and open_depths[-1] >= depth:
                out.append("</details>")
                open_depths.pop()
            count = int(row[5].replace(",", ""))
            summary = f"{row[0]} · {row[1]} · {plural(count, 'param')} · {row[6]}"
            pad = 0.6 + _INDENT * depth
            out.append(
                f"<details{' open' if depth == 0 else ''}>"
                f"<summary style='{_CELL};padding-left:{pad:.1f}em;cursor:pointer'>"
                f"{html.escape(summary)}</summary>"
            )
            open_depths.append(depth)
        else:
            if not open_depths or open_depths[-1] >= depth:  # back above an open group
                flush()
                while open_depths and open_depths[-1] >= depth:
                    out.append("</details>")
                    open_depths.pop()
            variables.append(cells(row, depth))
    flush()
    out.extend("</details>" for _ in open_depths)
    total = f"<tr><td style='{_CELL};border-top:1px solid var(--jp-border-color2, gray)' "
    out.append(f"{table}{total}colspan='{len(COLUMNS)}'><b>{html.escape(footer)}</b></td></tr>")
    out.append("</table></div>")
    return "".join(out)


_MAX_STATISTICS = 1 << 26  # elements: larger values are described, not reduced


def value_preview(variable: Variable) -> str:
    """A few values, or statistics of a larger value (every float dtype, bfloat16 and
    float16 included), computed where the value lives: a sharded array is reduced
    shard by shard, never gathered onto one device."""
    if variable.is_abstract:
        return "no value (abstract)"
    array = variable._array
    if not array.is_fully_addressable:
        return "values on other processes"
    if array.size <= 16:
        return np.array2string(np.asarray(array), separator=", ", threshold=16)
    if not jnp.issubdtype(array.dtype, jnp.floating) and not jnp.issubdtype(
        array.dtype, jnp.integer
    ):
        return f"{array.size:,} values"
    if array.size > _MAX_STATISTICS:
        return f"{array.size:,} values (no statistics above {_MAX_STATISTICS:,} elements)"
    stats = _statistics(array)
    text = ", ".join(f"{k} {float(v):.4g}" for k, v in stats.items() if k not in ("nan", "inf"))
    bad = {k: int(v) for k, v in stats.items() if k in ("nan", "inf") and int(v)}
    names = {"nan": "NaN", "inf": "Inf"}
    return text + "".join(f", {count:,} {names[k]}" for k, count in bad.items())


def _statistics(array: Any) -> dict[str, Any]:
    finite = jnp.isfinite(array) if jnp.issubdtype(array.dtype, jnp.floating) else None
    values = array.astype(jnp.float32)
    if finite is not None:
        values = jnp.where(finite, values, jnp.nan)
    out = {
        "min": jnp.nanmin(values),
        "mean": jnp.nanmean(values),
        "max": jnp.nanmax(values),
        "std": jnp.nanstd(values),
    }
    if finite is not None:
        out["nan"] = jnp.sum(jnp.isnan(array))
        out["inf"] = jnp.sum(jnp.isinf(array))
    return out


def variable_html(variable: Variable) -> str:
    nbytes = size_in_bytes(variable.size * variable.dtype.itemsize)
    facts = {
        "shape": str(variable.shape),
        "dtype": str(variable.dtype),
        "trainable": trainable_label(variable),
        "placement": placement(variable),
        "size": f"{plural(variable.size, 'value')}, {nbytes}",
        "value": value_preview(variable),
    }
    rows = "".join(
        f"<tr><th style='{_CELL}'>{k}</th>"
        f"<td style='{_CELL}'><pre style='margin:0'>{html.escape(v)}</pre></td></tr>"
        for k, v in facts.items()
    )
    title = html.escape(f"Variable '{variable.name}'")
    return f"<div><p><b>{title}</b></p><table style='margin:0'>{rows}</table></div>"


def named_rows(named: dict[str, Any]) -> list[tuple[int, tuple[str, ...]]]:
    """Flat rows for ``{name: variable}`` (a Store's, an Optimizer's state)."""
    return [variable_row(name, v) for name, v in named.items()]
