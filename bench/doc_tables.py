"""Markdown cells and tables of benchmark figures (pure functions, no I/O).

A figure is a `common.figure` dict ({median, min, max, n, runs, unit, command}); a missing
one (None) renders as 'not measured' cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

NOT_MEASURED = "not measured"


def fmt_num(x: float | None, digits: int = 3) -> str:
    """Compact number: 3 significant digits, thousands without exponent."""
    if x is None:
        return NOT_MEASURED
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax == 0:
        return "0"
    return f"{x:.{digits}g}"


def fmt_figure(fig: dict[str, Any] | None, scale: float = 1.0) -> tuple[str, str, str]:
    """(median, 'min–max', n) cells of a figure; 'not measured' cells when fig is None."""
    if not fig:
        return NOT_MEASURED, "", ""
    med, lo, hi = (fig[k] * scale for k in ("median", "min", "max"))
    if fig["n"] == 1:
        return fmt_num(med), "(1 run)", "1"
    return fmt_num(med), f"{fmt_num(lo)}–{fmt_num(hi)}", str(fig["n"])


def markdown_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """GitHub Markdown table; '|' inside cells is escaped."""

    def cell(s: str) -> str:
        return str(s).replace("|", "\\|")

    out = ["| " + " | ".join(cell(h) for h in header) + " |"]
    out.append("|" + "|".join("---" for _ in header) + "|")
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


FIGURE_HEADER = ("figure", "median", "spread (min–max)", "runs", "goal", "command")


def figure_rows(
    items: Sequence[tuple[str, dict[str, Any] | None, str, float]],
) -> list[list[str]]:
    """Rows of (label, figure or None, goal, scale) -> table rows; missing -> 'not measured'."""
    rows = []
    for label, fig, goal, scale in items:
        med, spread, n = fmt_figure(fig, scale)
        unit = (fig or {}).get("unit", "")
        label_u = f"{label} ({unit})" if unit and scale == 1.0 else label
        cmd = f"`{fig['command']}`" if fig and fig.get("command") else ""
        rows.append([label_u, med, spread, n, goal, cmd])
    return rows
