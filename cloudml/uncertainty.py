"""Intervals for the validation-flight metrics: a moving-block bootstrap over time order.

Neighbouring samples of a flight share frames (overlapping windows) and cloud, so their
errors are correlated; resampling single samples (the i.i.d. bootstrap) would treat 147
correlated samples as 147 independent ones and give intervals that are too narrow. The
moving-block bootstrap (Künsch 1989) resamples runs of `block` consecutive samples instead,
which keeps the dependence inside a block.

    iv = block_bootstrap(y_true, y_pred, seed=0)   # {"r2": (lo, hi), "mae_km": ..., ...}

Pure numpy, deterministic for a given seed.
"""

from __future__ import annotations

import math

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000
METRICS = ("r2", "mae_km", "rmse_km")


def block_length(resid: np.ndarray) -> int:
    """Block length for a series of residuals in time order: at least n^(1/3) (the usual
    rate for the moving-block bootstrap), and at least twice the first lag at which the
    residuals' autocorrelation falls inside its ±2/sqrt(n) noise band, so a block spans the
    correlation; at most n/10, so that a resample mixes at least ten blocks."""
    r = np.asarray(resid, dtype=np.float64)
    n = len(r)
    if n < 8:
        return 1
    r = r - r.mean()
    denom = float(np.dot(r, r))
    band, lag = 2.0 / math.sqrt(n), 1
    if denom > 0:
        while lag < n // 2 and float(np.dot(r[:-lag], r[lag:])) / denom > band:
            lag += 1
    else:
        lag = 1
    return int(min(max(round(n ** (1 / 3)), 2 * lag), max(1, n // 10)))


def resample_indices(n: int, block: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) sample indices: each row is ceil(n/block) blocks of `block`
    consecutive indices with uniformly drawn starts, cut to n. block=1 is the i.i.d.
    bootstrap."""
    rng = np.random.default_rng(seed)
    k = -(-n // block)
    starts = rng.integers(0, n - block + 1, size=(n_resamples, k))
    idx = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(n_resamples, -1)
    return idx[:, :n]


def metric_samples(
    y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray
) -> dict[str, np.ndarray]:
    """R², MAE and RMSE of each resample (rows of idx), vectorised."""
    y = np.asarray(y_true, dtype=np.float64)[idx]
    e = np.asarray(y_pred, dtype=np.float64)[idx] - y
    sse = np.sum(e**2, axis=1)
    sst = np.sum((y - y.mean(axis=1, keepdims=True)) ** 2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(sst > 0, 1.0 - sse / sst, np.nan)
    return {
        "r2": r2,
        "mae_km": np.mean(np.abs(e), axis=1),
        "rmse_km": np.sqrt(sse / idx.shape[1]),
    }


def block_bootstrap(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    block: int | None = None,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals {metric: (lo, hi)} for R², MAE and RMSE. `block` None picks
    it from the residuals (block_length); the chosen length is returned as "block"."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    n = len(y_true)
    if n < 2:
        return {m: (math.nan, math.nan) for m in METRICS} | {"block": 0}  # type: ignore[dict-item]
    block = block or block_length(y_pred - y_true)
    samples = metric_samples(y_true, y_pred, resample_indices(n, block, n_resamples, seed))
    a = (1 - confidence) / 2
    out: dict = {}
    for m in METRICS:
        s = samples[m][np.isfinite(samples[m])]
        out[m] = (
            (float(np.quantile(s, a)), float(np.quantile(s, 1 - a)))
            if len(s)
            else (
                math.nan,
                math.nan,
            )
        )
    out["block"] = int(block)
    return out


def interval_fields(iv: dict) -> dict[str, float]:
    """Flat metrics.json fields: r2_lo, r2_hi, mae_km_lo, ... and the block length."""
    out = {f"{m}_{side}": iv[m][i] for m in METRICS for i, side in enumerate(("lo", "hi"))}
    out["bootstrap_block"] = iv["block"]
    return out
