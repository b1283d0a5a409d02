"""Regression metrics of predicted against true cloud-base heights (pure numpy).

    m = regression_metrics(y_true_km, y_pred_km)   # {"mae_km", "rmse_km", "r2", "std_ratio", "n"}
    bias_by_height(y_true_km, y_pred_km)           # {"lt0.5": {"bias_km", "n"}, "0.5-1": ...}

Training (validation R² per epoch) and evaluation (metrics.json) both use it; it imports
nothing from either.
"""

from __future__ import annotations

import numpy as np


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, R² and std(pred)/std(true) (a collapsed model has a ratio near 0)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    err = y_pred - y_true
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2)) if len(y_true) else 0.0
    sd_true = float(np.std(y_true)) if len(y_true) else 0.0
    return {
        "mae_km": float(np.mean(np.abs(err))) if len(err) else float("nan"),
        "rmse_km": float(np.sqrt(np.mean(err**2))) if len(err) else float("nan"),
        "r2": 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else float("nan"),
        "std_ratio": float(np.std(y_pred)) / sd_true if sd_true > 0 else float("nan"),
        "n": int(len(y_true)),
    }


# bin edges of the true cloud base, km: the residuals were worst below 0.5 km
BIAS_BINS_KM: tuple[float, ...] = (0.5, 1.0, 1.5)


def bias_bin_labels(edges: tuple[float, ...] = BIAS_BINS_KM) -> list[str]:
    """['lt0.5', '0.5-1', '1-1.5', 'ge1.5'] for the default edges (metric-name friendly)."""
    fmt = [f"{e:g}" for e in edges]
    return [
        f"lt{fmt[0]}",
        *(f"{a}-{b}" for a, b in zip(fmt, fmt[1:], strict=False)),
        f"ge{fmt[-1]}",
    ]


def bias_by_height(
    y_true: np.ndarray, y_pred: np.ndarray, edges: tuple[float, ...] = BIAS_BINS_KM
) -> dict[str, dict[str, float]]:
    """Mean residual (prediction - truth, km) and sample count per range of the TRUE height:
    {label: {"bias_km", "n"}}, bins [-inf, e0), [e0, e1), ..., [e_last, inf). An empty bin has
    n 0 and bias None (JSON null). A model that regresses to the mean shows a positive bias
    for low bases and a negative one for high bases."""
    y_true = np.asarray(y_true, dtype=np.float64)
    err = np.asarray(y_pred, dtype=np.float64) - y_true
    which = np.searchsorted(np.asarray(edges, dtype=np.float64), y_true, side="right")
    out: dict[str, dict[str, float]] = {}
    for i, label in enumerate(bias_bin_labels(edges)):
        sel = which == i
        n = int(sel.sum())
        out[label] = {"bias_km": float(err[sel].mean()) if n else None, "n": n}
    return out


def flat_bias_metrics(bins: dict[str, dict[str, float | None]]) -> dict[str, float]:
    """bias_by_height's bins as scalar metrics (a KFP Metrics artifact holds scalars only):
    {"bias_km_true_<label>": bias, "n_true_<label>": n}; empty bins give only their n."""
    out: dict[str, float] = {}
    for label, b in bins.items():
        if b["bias_km"] is not None:
            out[f"bias_km_true_{label}"] = float(b["bias_km"])
        out[f"n_true_{label}"] = float(b["n"])
    return out
