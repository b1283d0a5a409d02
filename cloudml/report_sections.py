"""Pieces the HTML report and the model card share: number formats, the metric and member
tables, the ensemble / baseline / uncertainty texts, the gate notes, the config view."""

from __future__ import annotations

import html
import statistics
from typing import Any

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


def settings_rows(
    config: dict[str, Any],
    device: str | None,
    shape: tuple[int, int] | None,
    cpu_bf16: bool | None = None,
) -> list[tuple[str, str, str, str]]:
    """(setting, config value, in effect, why) for the settings that only act on CUDA or on
    large frames (cloudml.model.settings_in_effect); settings the config does not name are
    left out."""
    from cloudml.model import settings_in_effect

    said = {True: "yes", False: "no", None: "unknown"}
    return [
        (s.key, str(s.configured).lower(), said[s.in_effect], s.why or "as configured")
        for s in settings_in_effect(config, device, shape, cpu_bf16)
        if s.key in config
    ]


def config_view(
    config: dict[str, Any],
    device: str | None,
    shape: tuple[int, int] | None = None,
    cpu_bf16: bool | None = None,
) -> dict[str, Any]:
    """The config as it applied: a setting that is on but was skipped (CPU, small frames)
    reads 'true in the config; not in effect: <why>' instead of a bare true."""
    from cloudml.model import settings_in_effect

    out = dict(config)
    for s in settings_in_effect(config, device, shape, cpu_bf16):
        if s.configured and s.in_effect is not True:
            state = "not in effect" if s.in_effect is False else "in effect unknown"
            out[s.key] = f"true in the config; {state}: {s.why}"
    return out


def duration_text(seconds: float) -> str:
    """'9 s', '2 min 05 s', '1 h 02 min': a stage's wall time, rounded to the second."""
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def reference_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(predictor, R², RMSE km, what it is): the model beside the trivial predictors.

    The constant predictor at the validation flight's own mean has R² 0 by definition and
    RMSE = std of the true bases, recovered exactly from R² = 1 - MSE / var(y). The training
    flights' mean (metrics["train_mean_predictor"], when evaluate writes it) is what a model
    that learned nothing would predict; the ridge baseline is the one to beat.
    """
    rows = [("this model", _figure(metrics, "r2"), _figure(metrics, "rmse_km"),
             "the validation-flight figures above")]  # fmt: skip
    base = metrics.get("baseline") or {}
    if base:
        rows.append(("ridge baseline", _figure(base, "r2"), _figure(base, "rmse_km"),
                     "ridge regression on global frame statistics and the solar angles"))  # fmt: skip
    tm = metrics.get("train_mean_predictor") or {}
    if tm:
        what = "always the training flights' mean base"
        if tm.get("cbh_km") is not None:
            what += f" ({float(tm['cbh_km']):.3f} km)"
        rows.append(("training mean", _num(tm.get("r2")), _num(tm.get("rmse_km")), what))
    r2, rmse = metrics.get("r2"), metrics.get("rmse_km")
    if r2 is not None and rmse is not None and float(r2) < 1.0:
        std = float(rmse) / (1.0 - float(r2)) ** 0.5
        rows.append(("constant", "0.000", f"{std:.3f}",
                     "always the validation flight's own mean: R² 0 by definition, "
                     "RMSE = the spread of the true bases"))  # fmt: skip
    return rows


def height_range_text(label: str) -> str:
    """A bias bin's metric-friendly label in words: "lt0.5" -> "< 0.5 km", "0.5-1" ->
    "0.5–1 km", "ge1.5" -> "≥ 1.5 km"."""
    if label.startswith("lt"):
        return f"< {label[2:]} km"
    if label.startswith("ge"):
        return f"≥ {label[2:]} km"
    return label.replace("-", "–") + " km"


def bias_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(true cloud-base range, samples, mean residual km) from metrics["bias_by_height"]
    (cloudml.metrics.bias_by_height: {label: {"bias_km", "n"}}); [] without it."""
    rows = []
    for label, b in (metrics.get("bias_by_height") or {}).items():
        bias = b.get("bias_km")
        rows.append((height_range_text(label), _num(b.get("n")),
                     MISSING if bias is None else f"{float(bias):+.3f}"))  # fmt: skip
    return rows


def bias_text(metrics: dict[str, Any]) -> str | None:
    """One sentence on the mean residual of the validation flight; None without bias_km."""
    bias = metrics.get("bias_km")
    if bias is None:
        return None
    side = "over" if float(bias) > 0 else "under"
    return (
        f"Mean residual (prediction − truth) on the validation flight: {float(bias):+.3f} km: "
        f"on average the model {side}estimates the cloud base by {abs(float(bias)):.3f} km."
    )


def _device(ctx: dict[str, Any]) -> str | None:
    d = ctx.get("device")
    return str(d).lower() if d else None


def run_rows(ctx: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, value) for the run's identity: run id, commit, device; 'not recorded' for
    those the context lacks, so a card without a commit says so."""
    rows = [(k, str(ctx.get(k) or "not recorded")) for k in ("run_id", "commit")]
    return [*rows, ("device", _device(ctx) or "not recorded")]
