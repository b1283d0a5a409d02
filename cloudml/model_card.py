"""The Markdown model card (pure: a report context in, text out; see cloudml.report for the
context keys), rendered from the Jinja2 template cloudml/templates/model_card.md.j2.

The sections follow the usual model-card layout (Mitchell et al. 2019, "Model Cards for
Model Reporting"): model details, intended and out-of-scope use, training and evaluation
data, metrics with their uncertainty, limitations and biases, how to load it, the input
specification; then the settings actually in effect, the gate and the resolved config.
This module builds the values; the template only lays them out.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jinja2

from cloudml import __version__
from cloudml.report_sections import (
    MEMBER_COLUMNS,
    _device,
    _md_table,
    baseline_text,
    bias_rows,
    bias_text,
    config_view,
    data_rows,
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

TEMPLATE = "model_card.md.j2"


def intended_use(ctx: dict[str, Any]) -> list[str]:
    """The card's intended-use bullets; the synthetic-campaign caveat when it applies."""
    lines = [
        "- Research retrieval of cloud-base height from NASA ER-2 IRAI thermal-IR frames: "
        "method development and re-analysis of the campaign's flights.",
    ]
    if "synthetic" in str(ctx.get("data_source", "")).lower():
        lines.append(
            "- Trained and evaluated on the synthetic campaign (simulated scenes): its figures "
            "say the pipeline learns the simulated physics, not that it works on real ER-2 "
            "flights. Do not use it on real frames."
        )
    return lines


def out_of_scope(config: dict[str, Any]) -> list[str]:
    """What the model must not be used for, and inputs outside its training distribution."""
    return [
        "- Not operational: not validated for flight planning, aviation, forecasting or any "
        "real-time decision.",
        "- Scenes unlike the training flights: land, multi-layer or high cloud, cloud bases "
        f"outside the range of filter `{config.get('filter_type', '?')}`.",
        "- Frames from another camera, or not preprocessed by `cloudml ingest` with this "
        "run's settings (see the input specification).",
    ]


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


def loading_snippet(flight: str, model_path: str = "model", batch: int = 20) -> str:
    """Python that loads the shipped model and predicts one batch of a shard; run from the
    folder that holds `model_path` and `<flight>.h5` (tests/test_model_card.py runs it)."""
    return f"""import numpy as np

from cloudml.ensemble import load_ensemble
from cloudml.training.data import load_pool

# ensemble.json + member-<i>.pt; every member's sha256 checked, loaded with weights_only=True
ens = load_ensemble("{model_path}")
# a shard written by `cloudml ingest` (frames, solar angles, CPL truth per sample)
pool = load_pool({{"{flight}": "{flight}.h5"}}, ["{flight}"], ens.temporal_frames)
batch = np.arange(min({batch}, len(pool)))  # one batch: the shard's first samples
km = ens.predict_pool(pool, batch).mean(axis=0)  # (len(batch),) mean of the members, km
print(np.round(km, 3))"""


@cache
def _template() -> jinja2.Template:
    text = resources.files("cloudml").joinpath("templates", TEMPLATE).read_text("utf-8")
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,  # a missing value is a bug, not an empty line
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # Markdown, not HTML
    )
    return env.from_string(text)


def card_context(ctx: dict[str, Any]) -> dict[str, Any]:
    """Every value the template shows, from a report context (pure)."""
    metrics = ctx["metrics"]
    gate = ctx.get("gate") or {}
    config = ctx.get("config") or {}
    data = ctx.get("data") or {}
    shape = frame_shape(data)
    device = _device(ctx)
    bf16 = ctx.get("cpu_bf16")  # whether the run's CPU had native bf16 (None: not recorded)
    settings = settings_rows(config, device, shape, bf16)
    val = str(metrics.get("flight", config.get("validation_flight", "?")))
    header, rows = metric_table(metrics)
    training = [r for r in data_rows(data) if r[0] != val]
    evaluation = [r for r in data_rows(data) if r[0] == val]
    data_head = ("flight", "samples", "dropped by reason")
    member_head = ("member", "seed", *(label for _, label in MEMBER_COLUMNS))
    return {
        "pipeline": ctx.get("pipeline", "?"),
        "created": ctx.get("created_utc", "?"),
        "version": ctx.get("version", __version__),
        "run": run_rows(ctx),
        "temporal_frames": config.get("temporal_frames", "?"),
        "selection_pct": round(100 * float(config.get("val_fraction", 0.2))),
        "ensemble": ensemble_text(metrics),
        "intended": intended_use(ctx),
        "out_of_scope": out_of_scope(config),
        "data_source": ctx.get("data_source", "unknown"),
        "pretrain_flight": config.get("pretrain_flight", "?"),
        "validation_flight": val,
        "training_table": _md_table(data_head, training) if training else [],
        "evaluation_table": _md_table(data_head, evaluation) if evaluation else [],
        "metric_table": _md_table(header, rows),
        "reference_table": _md_table(
            ("predictor", "R²", "RMSE (km)", "what it is"), reference_rows(metrics)
        ),  # fmt: skip
        "baseline": baseline_text(metrics),
        "member_table": _md_table(member_head, member_rows(metrics))
        if metrics.get("members")
        else [],
        "uncertainty": uncertainty_text(metrics),
        "bias": bias_text(metrics),
        "bias_table": _md_table(
            ("true cloud base", "samples", "mean residual (km)"), bias_rows(metrics)
        )
        if bias_rows(metrics)
        else [],  # fmt: skip
        "filter_type": config.get("filter_type", "?"),
        "snippet": loading_snippet(
            val, str(ctx.get("model_path", "model")), int(config.get("batch_size", 20))
        ),  # fmt: skip
        "inputs": input_spec(config, shape),
        "settings_table": _md_table(("setting", "config", "in effect", "why"), settings)
        if settings
        else [],  # fmt: skip
        "gate_message": str(gate.get("message", "")) if gate else None,
        "gate_notes": gate_notes(gate) if gate else [],
        "config_json": json.dumps(
            config_view(config, device, shape, bf16), indent=2, sort_keys=True
        )
        if config
        else None,
    }


def build_model_card(ctx: dict[str, Any]) -> str:
    """Markdown model card of a run (sections in the module docstring)."""
    return _template().render(**card_context(ctx))
