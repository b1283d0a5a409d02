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
"""

from __future__ import annotations

import base64
import html
import json
import statistics
from pathlib import Path
from typing import Any

from cloudml.fileio import atomic_path

PLOTS = ("pred_vs_true.png", "residuals.png", "learning_curves.png")
# (key, label, unit) of the validation-flight table, CNN beside baseline
METRIC_ROWS = (
    ("r2", "R²", ""),
    ("mae_km", "MAE", "km"),
    ("rmse_km", "RMSE", "km"),
    ("bias_km", "bias (pred − true)", "km"),
    ("std_ratio", "std ratio (pred / true)", ""),
    ("loss", "loss", ""),
    ("n", "samples", ""),
)
MEMBER_COLUMNS = (("r2", "R²"), ("mae_km", "MAE (km)"), ("rmse_km", "RMSE (km)"),
                  ("std_ratio", "std ratio"))  # fmt: skip
MISSING = "—"
# Settings the training code honours only on CUDA (cloudml.model.maybe_compile, the autocast
# of cloudml.training.loop), and the one it honours only on large frames.
CUDA_ONLY = ("mixed_precision", "torch_compile")
CHECKPOINT_MIN_PIXELS = 128 * 128  # = cloudml.model.CHECKPOINT_MIN_PIXELS (tested)
LOADING_SNIPPET = """from cloudml.ensemble import load_ensemble
ens = load_ensemble("model/")        # directory with ensemble.json and member-<i>.pt
km = ens.predict_shard("12Feb25.h5")  # mean of the members' predictions, km"""

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


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _num(value: Any) -> str:
    """A figure: three decimals for floats, ints as they are, '—' when missing."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def interval_text(value: Any, lo: Any = None, hi: Any = None) -> str:
    """'0.420 [0.281, 0.530]'; the bare value when either bound is missing."""
    if value is None:
        return MISSING
    if lo is None or hi is None:
        return _num(value)
    return f"{float(value):.3f} [{float(lo):.3f}, {float(hi):.3f}]"


def _figure(m: dict[str, Any], key: str) -> str:
    return interval_text(m.get(key), m.get(f"{key}_lo"), m.get(f"{key}_hi"))


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _md_table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines


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


def metric_table(metrics: dict[str, Any]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """(header, rows) of the validation-flight figures: metric | CNN ensemble | baseline, each
    figure with its interval where the metrics carry one. No baseline column when there is
    no baseline; rows neither side has are left out."""
    base = metrics.get("baseline") or {}
    cnn = "CNN ensemble" if ("ensemble_size" in metrics or "members" in metrics) else "CNN"
    header = ("metric", cnn, "baseline") if base else ("metric", cnn)
    rows = []
    for key, label, unit in METRIC_ROWS:
        if key not in metrics and key not in base:
            continue
        name = f"{label} ({unit})" if unit else label
        row = (name, _figure(metrics, key))
        rows.append((*row, _figure(base, key)) if base else row)
    return header, rows


def member_spread(metrics: dict[str, Any]) -> tuple[float, float, float] | None:
    """(min, median, max) of the members' R², from the metrics or computed from `members`."""
    keys = ("member_r2_min", "member_r2_median", "member_r2_max")
    if all(metrics.get(k) is not None for k in keys):
        return tuple(float(metrics[k]) for k in keys)  # type: ignore[return-value]
    r2 = [float(m["r2"]) for m in metrics.get("members") or [] if m.get("r2") is not None]
    if not r2:
        return None
    return min(r2), statistics.median(r2), max(r2)


def member_rows(metrics: dict[str, Any]) -> list[tuple[str, ...]]:
    """(member, seed, R², MAE, RMSE, std ratio) per member, in the order trained."""
    return [
        (str(i), str(m.get("seed", "?")), *(_num(m.get(k)) for k, _ in MEMBER_COLUMNS))
        for i, m in enumerate(metrics.get("members") or [])
    ]


def ensemble_text(metrics: dict[str, Any]) -> str | None:
    """One line: K members, their seeds, the spread of their R²; None without members."""
    members = metrics.get("members") or []
    k = metrics.get("ensemble_size", len(members) or None)
    if not k:
        return None
    seeds = ", ".join(str(m.get("seed", "?")) for m in members)
    text = f"Ensemble of {k} member{'s' if k != 1 else ''}"
    text += f" (seeds {seeds})" if seeds else ""
    text += "; the prediction is the mean of the members' predictions in km."
    spread = member_spread(metrics)
    if spread:
        text += " Member R²: min {:.3f}, median {:.3f}, max {:.3f}.".format(*spread)
    return text


def baseline_text(metrics: dict[str, Any]) -> str | None:
    """What the baseline is and what it was fitted on; None without a baseline."""
    base = metrics.get("baseline") or {}
    if not base:
        return None
    flights = ", ".join(base.get("flights") or []) or "?"
    return (
        f"Baseline: {base.get('model', 'ridge regression')}; fitted on the training flights "
        f"({flights}) only, scored on the same validation samples with the same intervals."
    )


def uncertainty_text(metrics: dict[str, Any]) -> str | None:
    """How the intervals were made; None when the metrics carry none."""
    if not any(k.endswith(("_lo", "_hi")) for k in metrics):
        return None
    pct = round(100 * float(metrics.get("confidence", 0.95)))
    block = metrics.get("bootstrap_block", "?")
    return (
        f"Intervals are {pct}% percentile intervals from a moving-block bootstrap over the "
        f"validation flight's time order (cloudml/uncertainty.py), block length {block} "
        "samples: neighbouring samples share frames and cloud, so resampling blocks instead of "
        "single samples keeps their correlated errors together. They cover the sampling noise "
        "of this one flight, not the spread across days or campaigns."
    )


def gate_notes(gate: dict[str, Any]) -> list[str]:
    """Lines beside the verdict message: a pass within noise, the baseline comparison."""
    notes = []
    threshold, r2_lo = gate.get("threshold"), gate.get("r2_lo")
    within = gate.get("within_noise")
    if within is None and gate.get("passed") and r2_lo is not None and threshold is not None:
        within = r2_lo <= threshold
    if within:
        notes.append(
            f"Passed within noise: the lower end of the R² interval ({_num(r2_lo)}) does not "
            f"clear the threshold ({_num(threshold)}), so on this flight the model is not "
            "distinguishable from one at the threshold."
        )
    if gate.get("beat_baseline") is not None:
        notes.append(
            f"Beats the ridge baseline: {'yes' if gate['beat_baseline'] else 'no'} "
            f"(R² {_num(gate.get('r2'))} vs baseline {_num(gate.get('baseline_r2'))}, "
            f"required margin {_num(gate.get('skill_margin'))})."
        )
    return notes


def frame_shape(data: dict[str, dict[str, Any]]) -> tuple[int, int] | None:
    """The processed frame size (H, W) the ingest summaries agree on; None if unknown."""
    shapes = {tuple(s["frame_shape"]) for s in data.values() if s.get("frame_shape")}
    return shapes.pop() if len(shapes) == 1 else None  # type: ignore[return-value]


def config_view(
    config: dict[str, Any], device: str | None, shape: tuple[int, int] | None = None
) -> dict[str, Any]:
    """The config as it applied: a CUDA-only setting that is on reads 'requested; ...' unless
    the run was on CUDA, and gradient checkpointing unless the frames were large enough."""
    out = dict(config)
    where = {"cpu": "not used: this run was on CPU"}.get(str(device), "device not recorded")
    for key in CUDA_ONLY:
        if out.get(key) is True and device != "cuda":
            out[key] = f"requested; used only on CUDA ({where})"
    if out.get("gradient_checkpointing") is True:
        if shape is None:
            out["gradient_checkpointing"] = (
                f"requested; used only for frames of at least {CHECKPOINT_MIN_PIXELS} px "
                "(frame size not recorded)"
            )
        elif shape[0] * shape[1] < CHECKPOINT_MIN_PIXELS:
            out["gradient_checkpointing"] = (
                f"requested; used only for frames of at least {CHECKPOINT_MIN_PIXELS} px "
                f"(not used: {shape[0]}x{shape[1]} frames)"
            )
    return out


def _device(ctx: dict[str, Any]) -> str | None:
    d = ctx.get("device")
    return str(d).lower() if d else None


def run_rows(ctx: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, value) for the run's identity: run id, commit, device (those known)."""
    rows = [(k, str(ctx[k])) for k in ("run_id", "commit") if ctx.get(k)]
    return [*rows, ("device", _device(ctx) or "not recorded")]


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
    ens = ensemble_text(metrics)
    if ens:
        parts += ["<h2>Ensemble members</h2>", f"<p>{html.escape(ens)}</p>"]
        if metrics.get("members"):
            head = ("member", "seed", *(label for _, label in MEMBER_COLUMNS))
            parts.append(_table(head, member_rows(metrics)))
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
        view = config_view(config, _device(ctx), frame_shape(data))
        parts += [
            "<h2>Resolved configuration</h2>",
            _table(("key", "value"), [(k, view[k]) for k in sorted(view)]),
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def intended_use(ctx: dict[str, Any]) -> list[str]:
    """The card's intended-use bullets; the synthetic-campaign caveat when it applies."""
    lines = [
        "- Research retrieval of cloud-base height from NASA ER-2 IRAI thermal-IR frames: "
        "method development and re-analysis of the campaign's flights.",
        "- Not operational: not validated for flight planning, aviation, forecasting or any "
        "real-time decision.",
    ]
    if "synthetic" in str(ctx.get("data_source", "")).lower():
        lines.append(
            "- Trained and evaluated on the synthetic campaign (simulated scenes): its figures "
            "say the pipeline learns the simulated physics, not that it works on real ER-2 "
            "flights. Do not use it on real frames."
        )
    return lines


def input_spec(config: dict[str, Any], shape: tuple[int, int] | None) -> list[str]:
    """The card's inputs-and-output bullets."""
    t = config.get("temporal_frames", "temporal_frames")
    h, w = shape if shape else ("H", "W")
    sl = config.get("swath_slice")
    swath = f"[{sl[0]}, {sl[1]})" if isinstance(sl, (list, tuple)) and len(sl) == 2 else "?"
    prep = ", ".join(
        name
        for key, name in (
            ("flat_field_correction", "flat field"),
            ("clahe_clip_limit", "CLAHE"),
            ("zscore_normalize", "z-score"),
        )
        if config.get(key)
    )
    return [
        f"- frames: `{t} x {h} x {w}` float32 (temporal_frames x H x W consecutive IRAI "
        "frames around the sample's time), preprocessed by `cloudml ingest` exactly as for "
        f"training (swath rows {swath}, scale {config.get('scale', '?')}"
        + (f", {prep}" if prep else "")
        + "); raw frames must go through the same ingest.",
        "- sza, saa: solar zenith and solar azimuth angle of the sample, degrees.",
        "- output: cloud-base height of the lowest CPL layer, km (the mean of the ensemble "
        "members' predictions).",
    ]


def build_model_card(ctx: dict[str, Any]) -> str:
    """Markdown model card: intended use, inputs, data, metrics with intervals beside the
    baseline, members, uncertainty, gate, loading, configuration, limits."""
    metrics = ctx["metrics"]
    gate = ctx.get("gate") or {}
    config = ctx.get("config") or {}
    data = ctx.get("data") or {}
    shape = frame_shape(data)
    val = metrics.get("flight", config.get("validation_flight", "?"))
    lines = [
        f"# Model card — CloudML CBH regressor ({ctx.get('pipeline', '?')})",
        "",
        f"Created {ctx.get('created_utc', '?')}.",
        "",
        "## Run",
        "",
        *(f"- {k.replace('_', ' ')}: `{v}`" for k, v in run_rows(ctx)),
        "",
        "## Intended use",
        "",
        *intended_use(ctx),
        "",
        "## Model",
        "",
        "CNN with spatial attention, FiLM on solar zenith/azimuth and temporal attention over "
        f"{config.get('temporal_frames', '?')} IRAI thermal-IR frames; predicts the cloud-base "
        "height (km) of the lowest CPL layer.",
        "",
    ]
    ens = ensemble_text(metrics)
    if ens:
        lines += [ens, ""]
    lines += ["## Inputs and output", "", *input_spec(config, shape), ""]
    lines += [
        "## Data",
        "",
        f"Source: {ctx.get('data_source', 'unknown')}. Pretrained on "
        f"{config.get('pretrain_flight', '?')}, fine-tuned on every flight but {val}, "
        f"evaluated on {val} only (never seen in training or model selection).",
        "",
    ]
    if data:
        lines += [*_md_table(("flight", "samples", "dropped by reason"), data_rows(data)), ""]
    header, rows = metric_table(metrics)
    lines += ["## Metrics (validation flight)", "", *_md_table(header, rows), ""]
    text = baseline_text(metrics)
    if text:
        lines += [text, ""]
    if metrics.get("members"):
        head = ("member", "seed", *(label for _, label in MEMBER_COLUMNS))
        lines += ["## Ensemble members", "", *_md_table(head, member_rows(metrics)), ""]
    text = uncertainty_text(metrics)
    if text:
        lines += ["## Uncertainty", "", text, ""]
    if gate:
        lines += ["## Gate", "", str(gate.get("message", "")), ""]
        lines += [*(f"- {note}" for note in gate_notes(gate))]
        lines += [""] if gate_notes(gate) else []
    lines += ["## Loading the model", "", "```python", LOADING_SNIPPET, "```", ""]
    if config:
        view = config_view(config, _device(ctx), shape)
        lines += ["## Configuration", "", "```json", json.dumps(view, indent=2, sort_keys=True)]
        lines += ["```", ""]
    lines += [
        "## Limits",
        "",
        "- Trained for ocean scenes under single-layer boundary-layer cloud in the CBH range "
        f"of filter `{config.get('filter_type', '?')}`; land, multi-layer and high cloud are "
        "outside its training distribution.",
        "- One validation flight: the intervals carry the sampling noise of a few hundred "
        "samples from one day and one campaign, not the spread across days.",
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
