import csv
import json
from pathlib import Path

import numpy as np
import pytest

import cloudml.training.stages as train
from cloudml.cli import main
from cloudml.errors import DataError
from cloudml.evaluate import evaluate
from cloudml.metrics import bias_by_height, regression_metrics
from tests.support.train_fixtures import fast_cfg, write_shards


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ev")
    shards = write_shards(tmp, ["30Oct24", "12Feb25"])
    cfg = fast_cfg(epochs=2)
    train.pretrain(shards, cfg, tmp / "pre")
    train.pretrain(shards, fast_cfg(epochs=2, seed=7), tmp / "pre7")
    return tmp, shards, cfg


@pytest.mark.statistical  # r2_lo < r2 < r2_hi: measured 0.79-0.91 across, 8 seeds x 3 float paths
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
    point = {"flight", "loss", "mae_km", "rmse_km", "r2", "std_ratio", "n", "bias_km"}
    intervals = {f"{k}_{s}" for k in ("r2", "mae_km", "rmse_km") for s in ("lo", "hi")}
    ensemble = {"ensemble_size", "members", "member_r2_min", "member_r2_median", "member_r2_max"}
    extra = {"bootstrap_block", "confidence", "bias_by_height", "train_mean_predictor"}
    assert set(m) == point | intervals | ensemble | extra
    assert m["r2_lo"] < m["r2"] < m["r2_hi"] and m["ensemble_size"] == 1
    assert m["members"][0]["r2"] == m["r2"] == m["member_r2_min"] == m["member_r2_max"]
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == m["n"] == 60 and m["flight"] == "12Feb25"
    y = np.array([float(r["cbh_true_km"]) for r in rows])
    p = np.array([float(r["cbh_pred_km"]) for r in rows])
    again = regression_metrics(y, p)
    assert again["r2"] == pytest.approx(m["r2"], abs=1e-4)
    assert again["mae_km"] == pytest.approx(m["mae_km"], abs=1e-4)
    # bias per true-height range, from the same predictions; the counts add up to n
    bins = m["bias_by_height"]
    assert sum(b["n"] for b in bins.values()) == m["n"]
    for label, b in bias_by_height(y, p).items():
        assert bins[label]["n"] == b["n"]
        if b["n"]:
            assert bins[label]["bias_km"] == pytest.approx(b["bias_km"], abs=1e-4)
    for png in ("pred_vs_true.png", "residuals.png", "learning_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the reference: the training flights' mean CBH as a constant prediction
    ref = m["train_mean_predictor"]
    const = regression_metrics(y, np.full_like(y, ref["cbh_km"]))
    assert ref["r2"] == pytest.approx(const["r2"], abs=1e-4) and ref["r2"] <= 0.0  # csv: rounded km


def test_best_epoch_replays_the_training_loops_rule():
    from cloudml.evaluate import best_epoch

    losses = [1.0, 0.9, 0.8996, 0.7, 0.7]  # epoch 3 improves by less than min_delta
    rows = [{"epoch": i + 1, "selection_loss": v} for i, v in enumerate(losses)]
    assert best_epoch(rows, 0.0005) == 4
    assert best_epoch(rows, 0.0) == 4
    assert best_epoch(rows[:3], 0.0005) == 2 and best_epoch(rows[:3], 0.0) == 3
    assert best_epoch([], 0.0) is None


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


def test_an_ensemble_averages_its_members_in_km_and_carries_the_baseline(trained):
    tmp, shards, cfg = trained
    out = tmp / "ens"
    members = [tmp / "pre" / "model.pt", tmp / "pre7" / "model.pt"]
    train_shards = {"30Oct24": shards["30Oct24"]}
    m = evaluate(shards["12Feb25"], members, cfg, out, training_shards=train_shards)
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["time_utc", "cbh_true_km", "cbh_pred_km", "member_42_km",
                             "member_7_km", "baseline_km"]  # fmt: skip
    col = {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}
    np.testing.assert_allclose(col["cbh_pred_km"], (col["member_42_km"] + col["member_7_km"]) / 2,
                               atol=2e-5)  # fmt: skip
    assert [x["seed"] for x in m["members"]] == [42, 7] and m["ensemble_size"] == 2
    for x, name in zip(m["members"], ("member_42_km", "member_7_km"), strict=True):
        assert x["r2"] == pytest.approx(
            regression_metrics(col["cbh_true_km"], col[name])["r2"], abs=1e-3
        )
    b = m["baseline"]
    assert b["flights"] == ["30Oct24"] and m["baseline_r2"] == b["r2"]
    assert b["r2"] == pytest.approx(
        regression_metrics(col["cbh_true_km"], col["baseline_km"])["r2"], abs=1e-3
    )
    assert b["r2_lo"] <= b["r2"] <= b["r2_hi"]


def test_the_baseline_never_fits_on_the_validation_flight(trained):
    tmp, shards, cfg = trained
    with pytest.raises(DataError, match="validation flight 12Feb25 is among the training shards"):
        evaluate(shards["12Feb25"], tmp / "pre" / "model.pt", cfg, tmp / "leak",
                 training_shards={"12Feb25": shards["12Feb25"]})  # fmt: skip


def test_evaluate_reads_each_shard_once(trained, monkeypatch):
    """No work twice: the validation shard feeds both the pool and the baseline."""
    from collections import Counter

    import cloudml.data.shard as shard_mod
    import cloudml.training.data as data_mod

    tmp, shards, cfg = trained
    reads: Counter = Counter()
    real = shard_mod.read_shard

    def counted(path):
        reads[Path(path).name] += 1
        return real(path)

    monkeypatch.setattr(shard_mod, "read_shard", counted)
    monkeypatch.setattr(data_mod, "read_shard", counted)
    evaluate(shards["12Feb25"], tmp / "pre" / "model.pt", cfg, tmp / "once",
             training_shards={"30Oct24": shards["30Oct24"]})  # fmt: skip
    assert reads == {Path(shards["12Feb25"]).name: 1, Path(shards["30Oct24"]).name: 1}
