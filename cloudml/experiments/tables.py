"""The experiments' fan-in tables: the sweep's comparison and the leave-one-flight-out
report, as rows (pure), CSV text and a small HTML page."""

from __future__ import annotations

import csv
import html
import io
import math
from typing import Any

import numpy as np

from cloudml.uncertainty import CONFIDENCE, N_RESAMPLES, block_length, resample_indices

NOT_RANKED = "not used for ranking"
BOLD = ' style="font-weight:bold"'


def _f(x: Any) -> float:
    return float("nan") if x is None else float(x)


def bias_interval(y_true: np.ndarray, y_pred: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% moving-block bootstrap interval of the mean bias (prediction - truth), km, with
    the block length cloudml.uncertainty picks for these residuals (pure)."""
    e = np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64)
    if len(e) < 2:
        return math.nan, math.nan
    idx = resample_indices(len(e), block_length(e), N_RESAMPLES, seed)
    means = e[idx].mean(axis=1)
    a = (1 - CONFIDENCE) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


# --- sweep ---------------------------------------------------------------------------------
SWEEP_COLUMNS = (
    "rank", "variant", "selection_r2", "selection_r2_min", "selection_r2_max",
    "selection_loss", "val_r2", "val_r2_lo", "val_r2_hi", "val_mae_km", "val_mae_km_lo",
    "val_mae_km_hi", "val_bias_km", "val_n", "train_seconds", "lofo_r2", "lofo_r2_min",
    "lofo_r2_max", "ranked_on", "winner",
)  # fmt: skip


def sweep_rows(
    order: list[str],
    scores: dict[str, dict[str, Any]],
    validation: dict[str, dict[str, Any]],
    lofo: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per variant in rank order: the selection-split figures, the validation
    flight's (their own columns, not used for ranking), training time, and with `lofo` (the
    sweep-lofo pipeline) the leave-one-training-flight-out figures it was ranked on instead;
    `ranked_on` says which."""
    rows = []
    for i, label in enumerate(order, 1):
        s, v = scores[label], validation.get(label, {})
        lf = (lofo or {}).get(label, {})
        rows.append({
            "rank": i, "variant": label.split(".", 1)[-1],
            **{k: _f(s.get(k)) for k in ("selection_r2", "selection_r2_min",
                                         "selection_r2_max", "selection_loss")},
            **{f"val_{k}": _f(v.get(k)) for k in ("r2", "r2_lo", "r2_hi", "mae_km",
                                                  "mae_km_lo", "mae_km_hi", "bias_km")},
            "val_n": int(v.get("n", 0)), "train_seconds": _f(s.get("train_seconds")),
            **{k: _f(lf.get(k)) for k in ("lofo_r2", "lofo_r2_min", "lofo_r2_max")},
            "ranked_on": "selection" if lofo is None else "lofo", "winner": i == 1,
        })  # fmt: skip
    return rows


def sweep_ui_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The KFP Metrics scalars: per variant its selection R² (ranked on) and its validation
    R² (not used for ranking)."""
    out: dict[str, float] = {}
    for r in rows:
        if r["ranked_on"] == "lofo":
            out[f"{r['variant']}_lofo_r2"] = r["lofo_r2"]
        out[f"{r['variant']}_selection_r2"] = r["selection_r2"]
        out[f"{r['variant']}_val_r2_not_ranked"] = r["val_r2"]
    return out


# --- leave-one-flight-out ------------------------------------------------------------------
LOFO_COLUMNS = (
    "held_out", "pretrain_flight", "r2", "r2_lo", "r2_hi", "mae_km", "mae_km_lo", "mae_km_hi",
    "bias_km", "bias_km_lo", "bias_km_hi", "n",
)  # fmt: skip
SPREAD_KEYS = ("r2", "mae_km", "bias_km")


def lofo_row(held_out: str, pretrain: str, m: dict[str, Any], bias_iv: tuple[float, float]):
    """One fold's row from its evaluate metrics and its bias interval (pure)."""
    return {
        "held_out": held_out, "pretrain_flight": pretrain,
        **{k: _f(m.get(k)) for k in ("r2", "r2_lo", "r2_hi", "mae_km", "mae_km_lo",
                                     "mae_km_hi", "bias_km")},
        "bias_km_lo": bias_iv[0], "bias_km_hi": bias_iv[1], "n": int(m.get("n", 0)),
    }  # fmt: skip


def lofo_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean, spread (sample std over folds), min and max of R², MAE and bias (pure)."""
    out: dict[str, float] = {"folds": float(len(rows))}
    for k in SPREAD_KEYS:
        x = np.array([r[k] for r in rows], np.float64)
        out[f"mean_{k}"] = float(np.mean(x))
        out[f"std_{k}"] = float(np.std(x, ddof=1)) if len(x) > 1 else math.nan
        out[f"min_{k}"], out[f"max_{k}"] = float(np.min(x)), float(np.max(x))
    return out


def lofo_ui_metrics(rows: list[dict[str, Any]], summary: dict[str, float]) -> dict[str, float]:
    out = {f"{r['held_out']}_r2": r["r2"] for r in rows}
    out.update({f"{r['held_out']}_mae_km": r["mae_km"] for r in rows})
    out.update(summary)
    return out


# --- text (what `cloudml run` prints) -------------------------------------------------------
SWEEP_TEXT = (("rank", "rank"), ("variant", "variant"), ("selection_r2", "sel R² (ranked)"),
              ("val_r2", f"val R² ({NOT_RANKED})"), ("val_mae_km", "val MAE km"),
              ("train_seconds", "train s"))  # fmt: skip
SWEEP_LOFO_TEXT = (SWEEP_TEXT[:2] + (("lofo_r2", "LOFO R² (ranked)"),
                   ("selection_r2", "sel R²")) + SWEEP_TEXT[3:])  # fmt: skip
LOFO_TEXT = (("held_out", "held out"), ("pretrain_flight", "pretrained on"), ("r2", "R²"),
             ("r2_lo", "R² lo"), ("r2_hi", "R² hi"), ("mae_km", "MAE km"),
             ("bias_km", "bias km"), ("n", "n"))  # fmt: skip


def text_table(rows: list[dict[str, Any]], cols: tuple[tuple[str, str], ...]) -> list[str]:
    """Aligned plain-text lines: a header, then one line per row (pure)."""
    cells = [[h for _, h in cols]] + [[_text(r[k]) for k, _ in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
            for line in cells]  # fmt: skip


def _text(x: Any) -> str:
    if isinstance(x, bool):
        return "yes" if x else ""
    if isinstance(x, float):
        return "n/a" if math.isnan(x) else f"{x:.4f}"
    return str(x)


# --- files ---------------------------------------------------------------------------------
def to_csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in columns})
    return buf.getvalue()


def _cell(x: Any) -> str:
    if isinstance(x, float):
        return "n/a" if math.isnan(x) else f"{x:.4f}"
    return html.escape(str(x))


def _iv(r: dict[str, Any], k: str) -> str:
    return f"{_cell(r[k])} [{_cell(r[k + '_lo'])}, {_cell(r[k + '_hi'])}]"


def sweep_html(rows: list[dict[str, Any]], flight: str, base: str) -> str:
    """The comparison page: ranked on the selection split, or (sweep-lofo) on
    leave-one-flight-out over the training flights; the validation flight's figures in their
    own columns, labelled as not used for ranking."""
    on_lofo = bool(rows) and rows[0]["ranked_on"] == "lofo"
    sel_head = "members' mean, min-max" + ("" if on_lofo else "; ranked on")
    head = (
        "<tr><th>rank</th><th>variant</th>"
        + ("<th>leave-one-training-flight-out R² (ranked on; folds' mean, min-max)</th>"
           if on_lofo else "")
        + f"<th>selection-split R² ({sel_head})</th><th>selection loss (own loss function)</th>"
        f"<th>validation {html.escape(flight)} R² [95%] ({NOT_RANKED})</th>"
        f"<th>validation MAE km [95%] ({NOT_RANKED})</th><th>validation bias km</th>"
        "<th>n</th><th>training s (all members)</th></tr>"
    )  # fmt: skip

    def lofo_cell(r: dict[str, Any]) -> str:
        return (f"<td>{_cell(r['lofo_r2'])} ({_cell(r['lofo_r2_min'])}-"
                f"{_cell(r['lofo_r2_max'])})</td>") if on_lofo else ""  # fmt: skip

    body = "".join(
        f"<tr{BOLD if r['winner'] else ''}><td>{r['rank']}</td>"
        f"<td>{_cell(r['variant'])}{' (winner)' if r['winner'] else ''}</td>{lofo_cell(r)}"
        f"<td>{_cell(r['selection_r2'])} ({_cell(r['selection_r2_min'])}-"
        f"{_cell(r['selection_r2_max'])})</td><td>{_cell(r['selection_loss'])}</td>"
        f"<td>{_iv(r, 'val_r2')}</td><td>{_iv(r, 'val_mae_km')}</td>"
        f"<td>{_cell(r['val_bias_km'])}</td><td>{r['val_n']}</td>"
        f"<td>{_cell(r['train_seconds'])}</td></tr>"
        for r in rows
    )
    ranked = (
        "Ranked on leave-one-flight-out over the training flights (each fold holds out one "
        "training flight and is scored on it; no fold contains the validation flight)"
        if on_lofo
        else "Ranked on the selection split (the time-ordered tail of every training flight, "
        "the split finetune picks its epoch on)"
    )
    return _page(
        "CloudML sweep: variant comparison",
        f"<p>Variants are overrides of preset {html.escape(base)}. {ranked}; validation flight "
        f"{html.escape(flight)} is shown beside it and was not used for ranking. The winner "
        "goes through the gate and promotion.</p>",
        head + body,
    )


def lofo_html(rows: list[dict[str, Any]], summary: dict[str, float], verdict: str) -> str:
    head = (
        "<tr><th>held-out flight</th><th>pretrained on</th><th>R² [95%]</th>"
        "<th>MAE km [95%]</th><th>bias km [95%]</th><th>n</th></tr>"
    )
    body = "".join(
        f"<tr><td>{_cell(r['held_out'])}</td><td>{_cell(r['pretrain_flight'])}</td>"
        f"<td>{_iv(r, 'r2')}</td><td>{_iv(r, 'mae_km')}</td><td>{_iv(r, 'bias_km')}</td>"
        f"<td>{r['n']}</td></tr>"
        for r in rows
    )
    foot = "".join(
        f"<tr><td>{name}</td><td></td>"
        + "".join(f"<td>{_cell(summary[f'{name}_{k}'])}</td>" for k in SPREAD_KEYS)
        + "<td></td></tr>"
        for name in ("mean", "std", "min", "max")
    )
    return _page(
        "CloudML leave-one-flight-out",
        "<p>Each fold trains on every other flight and is scored once on the held-out one "
        "(intervals: 95% moving-block bootstrap). Rows mean/std/min/max summarise R², MAE "
        f"and bias over the folds. {html.escape(verdict)}</p>",
        head + body + foot,
    )


def _page(title: str, intro: str, table: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        "<style>td,th{border:1px solid #999;padding:2px 6px}table{border-collapse:collapse}"
        f"</style></head><body><h1>{title}</h1>{intro}<table>{table}</table></body></html>"
    )
