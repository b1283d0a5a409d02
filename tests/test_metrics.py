import numpy as np
import pytest

from cloudml.metrics import regression_metrics


def test_regression_metrics_values():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    perfect = regression_metrics(y, y)
    assert (perfect["r2"], perfect["mae_km"], perfect["rmse_km"], perfect["std_ratio"]) == (
        1.0,
        0.0,
        0.0,
        1.0,
    )
    mean = regression_metrics(y, np.full(4, 2.5))  # the mean predictor: R² 0, collapsed spread
    assert mean["r2"] == pytest.approx(0.0) and mean["std_ratio"] == 0.0
    m = regression_metrics(y, np.array([1.5, 2.0, 2.0, 5.0]))
    assert m["mae_km"] == pytest.approx(2.5 / 4)
    assert m["rmse_km"] == pytest.approx(np.sqrt(2.25 / 4))
    assert m["r2"] == pytest.approx(1 - 2.25 / 5.0)
    assert m["n"] == 4


def test_bias_by_height_bins_by_true_height():
    from cloudml.metrics import bias_bin_labels, bias_by_height, flat_bias_metrics

    y = np.array([0.2, 0.4, 0.7, 1.0, 1.2, 1.6, 2.0])
    p = np.array([0.6, 0.6, 0.7, 0.9, 1.1, 1.5, 1.6])
    b = bias_by_height(y, p)
    assert list(b) == bias_bin_labels() == ["lt0.5", "0.5-1", "1-1.5", "ge1.5"]
    assert b["lt0.5"]["n"] == 2 and b["lt0.5"]["bias_km"] == pytest.approx(0.3)
    assert b["0.5-1"]["n"] == 1 and b["0.5-1"]["bias_km"] == pytest.approx(0.0)
    # 1.0 is the lower edge of [1, 1.5): bins are closed on the left
    assert b["1-1.5"]["n"] == 2 and b["1-1.5"]["bias_km"] == pytest.approx(-0.1)
    assert b["ge1.5"]["n"] == 2 and b["ge1.5"]["bias_km"] == pytest.approx(-0.25)
    # an empty bin has n 0 and no bias (JSON null), and no bias scalar in the Metrics artifact
    e = bias_by_height(np.array([0.2, 0.3]), np.array([0.2, 0.5]))
    assert e["ge1.5"] == {"bias_km": None, "n": 0}
    flat = flat_bias_metrics(e)
    assert flat["bias_km_true_lt0.5"] == pytest.approx(0.1) and flat["n_true_lt0.5"] == 2.0
    assert "bias_km_true_ge1.5" not in flat and flat["n_true_ge1.5"] == 0.0
