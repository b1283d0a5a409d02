"""The run's HTML report and Markdown model card.

`build_report_html` and `build_model_card` are pure (a context dict in, text out) and are
tested apart from the file writes. The HTML is self-contained: plots are embedded as base64
PNG data URIs, so the one file opens from the Kubeflow UI, MinIO or a laptop alike.

Every figure of the validation flight is shown with its 95% block-bootstrap interval
("0.420 [0.281, 0.530]"), the ensemble's beside the ridge baseline's; a setting that only
acts on CUDA (or on large frames) is shown as requested, not as used, unless the run says so.

Context keys (all optional except metrics):
    pipeline: str                  preset / pipeline name
    created_utc: str               ISO timestamp
    run_id: str                    the run's id (KFP run id or local run folder name)
    commit: str                    git commit of the code that ran
    device: str                    "cpu" or "cuda" (where training ran); missing = unknown
    metrics: dict                  evaluate's metrics.json (docs/storage-and-metrics.md):
                                   flight, loss, r2, mae_km, rmse_km, std_ratio, n, bias_km;
                                   r2_lo/_hi, mae_km_lo/_hi, rmse_km_lo/_hi, confidence,
                                   bootstrap_block; ensemble_size, members [{seed, r2, mae_km,
                                   rmse_km, std_ratio}], member_r2_min/_median/_max;
                                   baseline {model, flights, r2, ..., r2_lo, ...}, baseline_r2.
                                   A metrics dict from before ensembles (no intervals, members
                                   or baseline) still renders: what is missing is left out.
    gate: dict                     cloudml.gate.GateVerdict.as_dict() (passed, message, r2_lo,
                                   baseline_r2, skill_margin, beat_baseline, within_noise, ...)
    config: dict                   Config.flat() plus "preset"
    data: dict[str, dict]          flight -> ingest summary {n_samples, dropped: {reason: n},
                                   frame_shape, ...}
    data_source: str               "synthetic campaign" / "real flights" / ...
    plots: dict[str, str]          file name -> base64 PNG
    stages: dict[str, float]       stage -> seconds
    model_path: str                where the shipped model sits, for the card's loading
                                   snippet (default "model": the local run folder's model/)
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from cloudml.fileio import atomic_path
from cloudml.model_card import build_model_card
from cloudml.report_sections import (
    MEMBER_COLUMNS,
    _device,
    _table,
    baseline_text,
    bias_rows,
    bias_text,
    config_view,
    data_rows,
    duration_text,
    ensemble_text,
    frame_shape,
    gate_notes,
    member_rows,
    metric_table,
    reference_rows,
    run_rows,
    settings_rows,
    uncertainty_text,
)

PLOTS = ("pred_vs_true.png", "residuals.png", "learning_curves.png")

# what each plot shows, in words (the heading above it; the file name stays the alt text)
PLOT_TITLES = {
    "pred_vs_true.png": "Predicted against true cloud base, validation flight {flight} "
    "(one point per sample; the dashed line is a perfect prediction)",
    "residuals.png": "Residuals: prediction minus true cloud base (km), validation flight {flight}",
    "learning_curves.png": "Learning curves: training loss and selection-split loss per "
    "epoch (the selection split is the held-out tail of the training flights)",
}


def plot_title(name: str, flight: str) -> str:
    """The heading of a plot in words; unknown plots keep their file name."""
    return PLOT_TITLES.get(name, name).format(flight=flight)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; }
.pass { color: #0a7a2f; font-weight: bold; } .fail { color: #b00020; font-weight: bold; }
.noise { color: #a15c00; font-weight: bold; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
"""


def encode_png(path: Path) -> str:
    """Base64 of a PNG file, for embedding."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def build_report_html(ctx: dict[str, Any]) -> str:
    """Self-contained HTML: verdict, metrics with intervals beside the baseline, members,
    plots, data summary, resolved config."""
    metrics = ctx["metrics"]
    gate = ctx.get("gate") or {}
    title = f"CloudML run report — {ctx.get('pipeline', '?')}"
    ident = "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in run_rows(ctx))
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>created {html.escape(str(ctx.get('created_utc', '?')))}; validation flight "
        f"{html.escape(str(metrics.get('flight', '?')))}; data: "
        f"{html.escape(str(ctx.get('data_source', 'unknown')))}; {html.escape(ident)}</p>",
    ]
    if gate:
        cls = "pass" if gate.get("passed") else "fail"
        parts.append(
            f'<h2>Gate</h2><p class="{cls}">{html.escape(str(gate.get("message", "")))}</p>'
        )
        notes = gate_notes(gate)
        for i, note in enumerate(notes):
            noise = i == 0 and note.startswith("Passed within noise")
            attr = ' class="noise"' if noise else ""
            parts.append(f"<p{attr}>{html.escape(note)}</p>")
    header, rows = metric_table(metrics)
    parts += ["<h2>Metrics (validation flight)</h2>", _table(header, rows)]
    for text in (uncertainty_text(metrics), baseline_text(metrics)):
        if text:
            parts.append(f"<p>{html.escape(text)}</p>")
    parts += [
        "<h2>Reference figures</h2>",
        "<p>The model beside predictors that learn nothing, on the same samples.</p>",
        _table(("predictor", "R²", "RMSE (km)", "what it is"), reference_rows(metrics)),
    ]
    bias, by_height = bias_text(metrics), bias_rows(metrics)
    if bias or by_height:
        parts.append("<h2>Bias</h2>")
        parts += [f"<p>{html.escape(bias)}</p>"] if bias else []
        if by_height:
            head = ("true cloud base", "samples", "mean residual (km)")
            parts.append(_table(head, by_height))
    ens = ensemble_text(metrics)
    if ens:
        parts += ["<h2>Ensemble members</h2>", f"<p>{html.escape(ens)}</p>"]
        if metrics.get("members"):
            head = ("member", "seed", *(label for _, label in MEMBER_COLUMNS))
            parts.append(_table(head, member_rows(metrics)))
    stages = ctx.get("stages") or {}
    if stages:
        rows = [(k, duration_text(v)) for k, v in stages.items()]
        parts += ["<h2>Stage durations</h2>", _table(("stage", "wall time"), rows)]
    plots = ctx.get("plots") or {}
    if plots:
        parts.append("<h2>Plots</h2>")
        flight = str(metrics.get("flight", "?"))
        for name in sorted(plots, key=lambda n: (PLOTS.index(n) if n in PLOTS else 99, n)):
            parts.append(
                f"<h3>{html.escape(plot_title(name, flight))}</h3>"
                f'<img alt="{html.escape(name)}" src="data:image/png;base64,{plots[name]}">'
            )
    data = ctx.get("data") or {}
    if data:
        parts += [
            "<h2>Data</h2>",
            _table(("flight", "samples", "dropped by reason"), data_rows(data)),
        ]
    config = ctx.get("config") or {}
    settings = settings_rows(config, _device(ctx), frame_shape(data), ctx.get("cpu_bf16"))
    if settings:
        parts += [
            "<h2>Settings in effect</h2>",
            _table(("setting", "config", "in effect", "why"), settings),
        ]
    if config:
        view = config_view(config, _device(ctx), frame_shape(data), ctx.get("cpu_bf16"))
        parts += [
            "<h2>Resolved configuration</h2>",
            _table(("key", "value"), [(k, view[k]) for k in sorted(view)]),
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


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
