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
