import csv
import json

import numpy as np
import pytest

import cloudml.training.stages as train
from cloudml.cli import main
from cloudml.errors import DataError
from cloudml.evaluate import evaluate
from cloudml.metrics import regression_metrics
from tests.support.train_fixtures import fast_cfg, write_shards


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ev")
    shards = write_shards(tmp, ["30Oct24", "12Feb25"])
    cfg = fast_cfg(epochs=2)
    train.pretrain(shards, cfg, tmp / "pre")
    return tmp, shards, cfg


def test_evaluate_writes_consistent_outputs(trained):
    tmp, shards, cfg = trained
    out = tmp / "eval"
    m = evaluate(
        shards["12Feb25"],
        tmp / "pre" / "model.pt",
        cfg,
        out,
        {"pretrain": tmp / "pre" / "history.json"},
    )
    assert {p.name for p in out.iterdir()} == {
        "metrics.json",
        "predictions.csv",
        "pred_vs_true.png",
        "residuals.png",
        "learning_curves.png",
    }
    assert json.loads((out / "metrics.json").read_text()) == m
    assert set(m) == {"flight", "loss", "mae_km", "rmse_km", "r2", "std_ratio", "n"}
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == m["n"] == 60 and m["flight"] == "12Feb25"
    y = np.array([float(r["cbh_true_km"]) for r in rows])
    p = np.array([float(r["cbh_pred_km"]) for r in rows])
    again = regression_metrics(y, p)
    assert again["r2"] == pytest.approx(m["r2"], abs=1e-4)
    assert again["mae_km"] == pytest.approx(m["mae_km"], abs=1e-4)
    for png in ("pred_vs_true.png", "residuals.png", "learning_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_refuses_a_training_flight(trained):
    tmp, shards, cfg = trained
    with pytest.raises(DataError, match=r"30Oct24\.h5.*validation_flight 12Feb25"):
        evaluate(shards["30Oct24"], tmp / "pre" / "model.pt", cfg, tmp / "bad")
    assert not (tmp / "bad").exists()


def test_cli_evaluate_picks_the_validation_shard(trained, capsys):
    tmp, shards, cfg = trained
    args = ["evaluate", "--shard", str(shards["30Oct24"]), "--shard", str(shards["12Feb25"])]
    args += ["--checkpoint", str(tmp / "pre" / "model.pt"), "--out", str(tmp / "cli")]
    args += ["--history", f"pretrain={tmp / 'pre' / 'history.json'}"]
    for k, v in {"memory_optimized": "true", "temporal_frames": 3}.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["flight"] == "12Feb25"
