"""The trivial model every evaluation is held against: ridge regression on global statistics
of each sample's centre frame and the solar angles.

A CNN that cannot beat ten numbers per frame has not learned the geometry (shadow offset,
parallax) the label lives in; evaluate reports this baseline beside the CNN with the same
intervals, and the gate requires the CNN to beat it (cloudml.gate).

    model = fit_baseline([shard_a, shard_b, ...])          # training flights only
    km = model.predict(validation_shard)

`fit_baseline` takes any iterable of shards and keeps only their features, so evaluate
passes a generator that reads one training shard at a time: at full size a shard's frame
table is ~1.4 GB, and its centre frames in float64 about twice that again, so holding every
training flight at once would set evaluate's memory by the campaign's size.

Features (per sample, from the preprocessed centre frame of its window): mean, std, min,
max, the 10/25/50/75/90th percentiles, centre minus border (the mean of the central half
of the frame minus the mean of the rest), plus sza, cos(saa), sin(saa). Standardised with
the training samples' mean and std; closed-form ridge (numpy, deterministic).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from cloudml.data.shard import Shard
from cloudml.errors import DataError

RIDGE_ALPHA = 1.0  # on standardised features; with ~1000 samples it barely regularises
FEATURE_CHUNK = 64  # samples whose centre frames are converted to float64 at once
FEATURES = (
    "mean", "std", "min", "max", "p10", "p25", "p50", "p75", "p90", "centre_minus_border",
    "sza", "cos_saa", "sin_saa",
)  # fmt: skip


def frame_features(frames: np.ndarray, sza_deg: np.ndarray, saa_deg: np.ndarray) -> np.ndarray:
    """(n, len(FEATURES)) features of n centre frames (n, H, W) and their solar angles."""
    f = np.asarray(frames, dtype=np.float64)
    n, h, w = f.shape
    flat = f.reshape(n, -1)
    inner = np.zeros((h, w), dtype=bool)
    inner[h // 4 : h - h // 4, w // 4 : w - w // 4] = True
    centre = flat[:, inner.ravel()].mean(axis=1)
    border = flat[:, ~inner.ravel()].mean(axis=1) if (~inner).any() else centre
    pct = np.percentile(flat, [10, 25, 50, 75, 90], axis=1).T
    saa = np.deg2rad(np.asarray(saa_deg, dtype=np.float64))
    cols = [flat.mean(1), flat.std(1), flat.min(1), flat.max(1), *pct.T, centre - border,
            np.asarray(sza_deg, dtype=np.float64), np.cos(saa), np.sin(saa)]  # fmt: skip
    return np.stack(cols, axis=1)


def shard_features(shard: Shard, chunk: int = FEATURE_CHUNK) -> np.ndarray:
    """frame_features of every sample of a shard (centre frame of each window), `chunk`
    samples at a time: the same values as one call, without a float64 copy of every
    centre frame (each sample's features depend on its own frame only)."""
    centre = shard.frame_index[:, shard.temporal_frames // 2]
    parts = [
        frame_features(shard.frame_table[centre[i : i + chunk]], shard.sza_deg[i : i + chunk],
                       shard.saa_deg[i : i + chunk])
        for i in range(0, len(centre), chunk)
    ]  # fmt: skip
    return np.concatenate(parts) if parts else np.zeros((0, len(FEATURES)))


@dataclass(frozen=True)
class RidgeBaseline:
    mean: np.ndarray  # feature means (training samples)
    scale: np.ndarray  # feature stds (1 where a feature is constant)
    coef: np.ndarray
    intercept: float
    flights: tuple[str, ...]

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept

    def predict(self, shard: Shard) -> np.ndarray:
        """CBH (km) for every sample of `shard`."""
        return self.predict_features(shard_features(shard))


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float = RIDGE_ALPHA) -> tuple:
    """(mean, scale, coef, intercept) of ridge regression on standardised features."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (x - mean) / scale
    intercept = float(y.mean())
    coef = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - intercept))
    return mean, scale, coef, intercept


def fit_baseline(shards: Iterable[Shard], alpha: float = RIDGE_ALPHA) -> RidgeBaseline:
    """Ridge on every sample of `shards` (the training flights; never the validation one).
    Each shard is dropped once its features are taken: a generator of shards keeps one in
    memory at a time."""
    xs, ys, flights = [], [], []
    for s in shards:
        xs.append(shard_features(s))
        ys.append(np.asarray(s.cbh_km, dtype=np.float64))
        flights.append(s.flight)
        del s
    n = sum(len(y) for y in ys)
    if n < len(FEATURES) + 1:
        raise DataError(
            f"baseline: {n} training samples in {flights}, need at least {len(FEATURES) + 1}"
        )
    mean, scale, coef, intercept = fit_ridge(np.concatenate(xs), np.concatenate(ys), alpha)
    return RidgeBaseline(mean, scale, coef, intercept, tuple(flights))
