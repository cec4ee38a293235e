"""How variables, modules, stores and optimisers show themselves: text tables and HTML.

One set of facts per variable (shape, dtype, trainable setting, placement,
size) feeds ``module.summary()``, the notebooks' ``_repr_html_`` of Variable,
Module, Store and Optimizer, so they always agree.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

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
    """``cpu:0``, ``cpu:0 (uncommitted)``, ``P('data', None) over 8 devices`` or ``abstract``."""
    if variable.is_abstract:
        return "abstract"
    sharding = variable._array.sharding
    devices = sharding.device_set
    if len(devices) > 1:
        spec = sharding.spec if isinstance(sharding, NamedSharding) else type(sharding).__name__
        return f"{spec} over {len(devices)} devices"
    device = next(iter(devices))
    where = f"{device.platform}:{device.id}"
    return where if variable._array.committed else f"{where} (uncommitted)"


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


def totals(variables: Iterable[Variable]) -> str:
    """``Total: 1,234 parameters, 4.8 KiB (1,000 trainable, 234 non-trainable)``."""
    total = trainable = nbytes = 0
    for v in variables:
        total += v.size
        nbytes += v.size * v.dtype.itemsize
        mask = v.trainable
        trainable += v.size if mask is True else 0 if mask is False else int(np.sum(mask))
    return (
        f"Total: {total:,} parameters, {size_in_bytes(nbytes)} ({trainable:,} trainable, "
        f"{total - trainable:,} non-trainable)"
    )


def text_table(title: str, rows: list[tuple[int, tuple[str, ...]]], footer: str) -> list[str]:
    """Lines of an aligned table; each row's first cell indented by its depth."""
    cells = [COLUMNS, *[("  " * depth + row[0], *row[1:]) for depth, row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = [title]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    lines.append(footer)
    return lines


def html_table(title: str, rows: list[tuple[int, tuple[str, ...]]], footer: str) -> str:
    """The same table as HTML, for notebooks."""
    head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join(
        "<tr>"
        + f"<td style='padding-left:{0.3 + 1.2 * depth:.1f}em'>{html.escape(row[0])}</td>"
        + "".join(f"<td>{html.escape(c)}</td>" for c in row[1:])
        + "</tr>"
        for depth, row in rows
    )
    return (
        f"<div><p><b>{html.escape(title)}</b></p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"<p>{html.escape(footer)}</p></div>"
    )


def value_preview(variable: Variable) -> str:
    """A few values, or statistics of a larger value."""
    if variable.is_abstract:
        return "no value (abstract)"
    try:
        value = np.asarray(variable._array)
    except Exception:  # spread over other processes: no values here to show
        return "values on other processes"
    if value.size <= 16:
        return np.array2string(value, separator=", ", threshold=16)
    if not np.issubdtype(value.dtype, np.number) or np.issubdtype(value.dtype, np.complexfloating):
        return f"{value.size:,} values"
    as_float = value.astype(np.float64)
    return (
        f"min {as_float.min():.4g}, mean {as_float.mean():.4g}, max {as_float.max():.4g}, "
        f"std {as_float.std():.4g}"
    )


def variable_html(variable: Variable) -> str:
    nbytes = size_in_bytes(variable.size * variable.dtype.itemsize)
    facts = {
        "shape": str(variable.shape),
        "dtype": str(variable.dtype),
        "trainable": trainable_label(variable),
        "placement": placement(variable),
        "size": f"{variable.size:,} values, {nbytes}",
        "value": value_preview(variable),
    }
    rows = "".join(
        f"<tr><th style='text-align:left'>{k}</th>"
        f"<td><pre style='margin:0'>{html.escape(v)}</pre></td></tr>"
        for k, v in facts.items()
    )
    title = html.escape(f"Variable '{variable.name}'")
    return f"<div><p><b>{title}</b></p><table>{rows}</table></div>"


def named_rows(named: dict[str, Any]) -> list[tuple[int, tuple[str, ...]]]:
    """Flat rows for ``{name: variable}`` (a Store's, an Optimizer's state)."""
    return [variable_row(name, v) for name, v in named.items()]
