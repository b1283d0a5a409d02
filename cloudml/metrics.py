"""Regression metrics of predicted against true cloud-base heights (pure numpy).

    m = regression_metrics(y_true_km, y_pred_km)   # {"mae_km", "rmse_km", "r2", "std_ratio", "n"}

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
