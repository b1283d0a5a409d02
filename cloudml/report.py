"""The run's HTML report and Markdown model card.

`build_report_html` and `build_model_card` are pure (a context dict in, text out) and are
tested apart from the file writes. The HTML is self-contained: plots are embedded as base64
PNG data URIs, so the one file opens from the Kubeflow UI, MinIO or a laptop alike.

Context keys (all optional except metrics):
    pipeline: str                  preset / pipeline name
    created_utc: str               ISO timestamp
    metrics: dict                  {r2, mae_km, rmse_km, loss, std_ratio, n, flight}
    gate: dict                     cloudml.gate.GateVerdict.as_dict()
    config: dict                   Config.flat() plus "preset"
    data: dict[str, dict]          flight -> ingest summary {n_samples, dropped: {reason: n}, ...}
    data_source: str               "synthetic campaign" / "real flights" / ...
    plots: dict[str, str]          file name -> base64 PNG
    stages: dict[str, float]       stage -> seconds
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from cloudml.fileio import atomic_path

PLOTS = ("pred_vs_true.png", "residuals.png", "learning_curves.png")
METRIC_ROWS = (
    ("r2", "R²", ""),
    ("mae_km", "MAE", "km"),
    ("rmse_km", "RMSE", "km"),
    ("loss", "loss", ""),
    ("std_ratio", "std ratio (pred / true)", ""),
    ("n", "samples", ""),
)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; }
.pass { color: #0a7a2f; font-weight: bold; } .fail { color: #b00020; font-weight: bold; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
"""


def encode_png(path: Path) -> str:
    """Base64 of a PNG file, for embedding."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def data_rows(data: dict[str, dict[str, Any]]) -> list[tuple[str, int, str]]:
    """(flight, samples kept, dropped by reason) per flight, flights in name order; reasons
    that dropped nothing are left out."""
    rows = []
    for flight in sorted(data):
        s = data[flight]
        dropped = s.get("dropped") or {}
        why = ", ".join(f"{k}: {v}" for k, v in sorted(dropped.items()) if v) or "none"
        rows.append((flight, int(s.get("n_samples", 0)), why))
    return rows


def build_report_html(ctx: dict[str, Any]) -> str:
    """Self-contained HTML: verdict, metrics, plots, data summary, resolved config."""
    metrics = ctx["metrics"]
    gate = ctx.get("gate") or {}
    title = f"CloudML run report — {ctx.get('pipeline', '?')}"
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>created {html.escape(str(ctx.get('created_utc', '?')))}; validation flight "
        f"{html.escape(str(metrics.get('flight', '?')))}; data: "
        f"{html.escape(str(ctx.get('data_source', 'unknown')))}</p>",
    ]
    if gate:
        cls = "pass" if gate.get("passed") else "fail"
        parts.append(
            f'<h2>Gate</h2><p class="{cls}">{html.escape(str(gate.get("message", "")))}</p>'
        )
    rows = [(label, metrics[k], unit) for k, label, unit in METRIC_ROWS if k in metrics]
    parts += ["<h2>Metrics (validation flight)</h2>", _table(("metric", "value", "unit"), rows)]
    stages = ctx.get("stages") or {}
    if stages:
        parts += [
            "<h2>Stage durations</h2>",
            _table(("stage", "seconds"), [(k, float(v)) for k, v in stages.items()]),
        ]
    plots = ctx.get("plots") or {}
    if plots:
        parts.append("<h2>Plots</h2>")
        for name in sorted(plots, key=lambda n: (PLOTS.index(n) if n in PLOTS else 99, n)):
            parts.append(
                f"<h3>{html.escape(name)}</h3>"
                f'<img alt="{html.escape(name)}" src="data:image/png;base64,{plots[name]}">'
            )
    data = ctx.get("data") or {}
    if data:
        parts += [
            "<h2>Data</h2>",
            _table(("flight", "samples", "dropped by reason"), data_rows(data)),
        ]
    config = ctx.get("config") or {}
    if config:
        parts += [
            "<h2>Resolved configuration</h2>",
            _table(("key", "value"), [(k, config[k]) for k in sorted(config)]),
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def build_model_card(ctx: dict[str, Any]) -> str:
    """Markdown model card: data, configuration, metrics, gate, limits."""
    metrics = ctx["metrics"]
    gate = ctx.get("gate") or {}
    config = ctx.get("config") or {}
    data = ctx.get("data") or {}
    val = metrics.get("flight", config.get("validation_flight", "?"))
    lines = [
        f"# Model card — CloudML CBH regressor ({ctx.get('pipeline', '?')})",
        "",
        f"Created {ctx.get('created_utc', '?')}.",
        "",
        "## Model",
        "",
        "CNN with spatial attention, FiLM on solar zenith/azimuth and temporal attention over "
        f"{config.get('temporal_frames', '?')} IRAI thermal-IR frames; predicts the cloud-base "
        "height (km) of the lowest CPL layer.",
        "",
        "## Data",
        "",
        f"Source: {ctx.get('data_source', 'unknown')}. Pretrained on "
        f"{config.get('pretrain_flight', '?')}, fine-tuned on every flight but {val}, "
        f"evaluated on {val} only (never seen in training or model selection).",
        "",
    ]
    if data:
        lines += ["| flight | samples | dropped by reason |", "|---|---|---|"]
        lines += [f"| {f} | {n} | {why} |" for f, n, why in data_rows(data)]
        lines.append("")
    lines += ["## Metrics (validation flight)", "", "| metric | value |", "|---|---|"]
    lines += [
        f"| {label}{' (' + unit + ')' if unit else ''} | {_fmt(metrics[k])} |"
        for k, label, unit in METRIC_ROWS
        if k in metrics
    ]
    lines.append("")
    if gate:
        lines += ["## Gate", "", str(gate.get("message", "")), ""]
    if config:
        lines += ["## Configuration", "", "```json", json.dumps(config, indent=2, sort_keys=True)]
        lines += ["```", ""]
    lines += [
        "## Limits",
        "",
        "- Trained for ocean scenes under single-layer boundary-layer cloud in the CBH range "
        f"of filter `{config.get('filter_type', '?')}`; land, multi-layer and high cloud are "
        "outside its training distribution.",
        "- One validation flight: the metrics carry the sampling noise of a few hundred "
        "samples from one day and one campaign.",
        "- When the data source is the synthetic campaign, the metrics say the pipeline "
        "learns the simulated physics, not that it works on real ER-2 flights.",
        "",
    ]
    return "\n".join(lines)


def write_report(out_dir: Path, ctx: dict[str, Any]) -> tuple[Path, Path]:
    """Write out_dir/report.html and out_dir/model_card.md atomically; returns both paths."""
    out_dir = Path(out_dir)
    html_path, card_path = out_dir / "report.html", out_dir / "model_card.md"
    with atomic_path(html_path) as tmp:
        tmp.write_text(build_report_html(ctx), encoding="utf-8")
    with atomic_path(card_path) as tmp:
        tmp.write_text(build_model_card(ctx), encoding="utf-8")
    return html_path, card_path


def load_plots(eval_dir: Path) -> dict[str, str]:
    """Base64 of the evaluate plots present in eval_dir (missing ones are left out)."""
    return {
        name: encode_png(Path(eval_dir) / name)
        for name in PLOTS
        if (Path(eval_dir) / name).is_file()
    }
