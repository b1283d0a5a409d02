"""Block-bootstrap intervals: coverage on series of known correlation, and wider than the
i.i.d. bootstrap where neighbouring samples are correlated."""

import numpy as np
import pytest

from cloudml.uncertainty import block_bootstrap, block_length, interval_fields, resample_indices


def ar1(rng, n, phi, sd):
    """Stationary AR(1) series with marginal standard deviation sd."""
    x = np.empty(n)
    x[0] = rng.normal(0, sd)
    e = rng.normal(0, sd * np.sqrt(1 - phi**2), n)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


def test_resample_rows_are_runs_of_consecutive_indices():
    idx = resample_indices(20, 5, 3, seed=1)
    assert idx.shape == (3, 20)
    runs = idx.reshape(3, 4, 5)
    assert np.all(np.diff(runs, axis=2) == 1) and idx.min() >= 0 and idx.max() <= 19


def test_block_length_follows_the_correlation():
    rng = np.random.default_rng(0)
    white, red = rng.normal(size=400), ar1(rng, 400, 0.9, 1.0)
    assert block_length(white) == round(400 ** (1 / 3))
    assert block_length(red) > 2 * block_length(white)
    assert block_length(red) <= 40  # n/10: at least ten blocks per resample


def test_interval_covers_the_true_r2_at_about_its_nominal_rate_and_beats_iid():
    """y: AR(1) signal (sd 1), prediction = y + AR(1) error (sd 0.5), both with lag-1
    correlation 0.8, so the true R² is 1 - 0.25 = 0.75. Over 200 independent series of 300
    samples the 95% block interval covers it in 90% of series (measured; binomial sd 2%),
    the i.i.d. bootstrap's in 66%, with intervals about half as wide."""
    n, phi, reps, true_r2 = 300, 0.8, 200, 0.75
    cover_block = cover_iid = 0
    width_block = width_iid = 0.0
    for r in range(reps):
        rng = np.random.default_rng(r)
        y = ar1(rng, n, phi, 1.0)
        p = y + ar1(rng, n, phi, 0.5)
        b = block_bootstrap(y, p, seed=r, n_resamples=500)["r2"]
        i = block_bootstrap(y, p, block=1, seed=r, n_resamples=500)["r2"]
        cover_block += b[0] <= true_r2 <= b[1]
        cover_iid += i[0] <= true_r2 <= i[1]
        width_block += b[1] - b[0]
        width_iid += i[1] - i[0]
    assert 0.85 <= cover_block / reps <= 0.99
    assert cover_block / reps > cover_iid / reps + 0.1
    assert width_block > 1.5 * width_iid


def test_independent_samples_keep_short_blocks_and_nominal_coverage():
    hits = 0
    for r in range(100):
        rng = np.random.default_rng(1000 + r)
        y = rng.normal(size=200)
        p = y + rng.normal(0, 0.5, 200)
        hits += (lambda iv: iv[0] <= 0.75 <= iv[1])(
            block_bootstrap(y, p, seed=r, n_resamples=500)["r2"]
        )
    assert hits >= 88  # nominal 95; binomial sd 2.2


def test_intervals_contain_the_point_estimates_and_flatten_for_metrics_json():
    rng = np.random.default_rng(3)
    y = ar1(rng, 150, 0.7, 1.0)
    p = y + rng.normal(0, 0.4, 150)
    iv = block_bootstrap(y, p)
    r2 = 1 - np.sum((p - y) ** 2) / np.sum((y - y.mean()) ** 2)
    assert iv["r2"][0] < r2 < iv["r2"][1]
    mae = np.mean(np.abs(p - y))
    assert iv["mae_km"][0] < mae < iv["mae_km"][1]
    flat = interval_fields(iv)
    assert set(flat) == {"r2_lo", "r2_hi", "mae_km_lo", "mae_km_hi", "rmse_km_lo", "rmse_km_hi",
                         "bootstrap_block"}  # fmt: skip
    assert block_bootstrap(y, p) == iv  # deterministic for a seed


@pytest.mark.parametrize("n", [0, 1])
def test_too_few_samples_give_nan_intervals(n):
    iv = block_bootstrap(np.zeros(n), np.zeros(n))
    assert np.isnan(iv["r2"][0]) and np.isnan(iv["r2"][1])
