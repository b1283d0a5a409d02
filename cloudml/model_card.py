"""The Markdown model card (pure: a report context in, text out; see cloudml.report for the
context keys)."""

from __future__ import annotations

import json
from typing import Any

from cloudml.report_sections import (
    LOADING_SNIPPET,
    MEMBER_COLUMNS,
    _device,
    _md_table,
    baseline_text,
    config_view,
    data_rows,
    ensemble_text,
    frame_shape,
    gate_notes,
    member_rows,
    metric_table,
    run_rows,
    uncertainty_text,
)


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
