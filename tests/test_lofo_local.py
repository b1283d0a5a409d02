"""Leave-one-flight-out end to end on KFP's local runner (slow): the 2-flight campaign of
tests/test_local_run.py at its tiny settings, one member per fold. A one-epoch model learns
nothing: this tests the folds and the report, not the models."""

from __future__ import annotations

import csv
import json

import pytest

from tests.test_local_run import TINY, raw_dir  # noqa: F401 - the 2-flight campaign fixture
from tests.test_sweep_local import run_cli


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_lofo_holds_out_each_flight_then_gates_the_mean(tmp_path, raw_dir, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    common = [*TINY, "--set", "ensemble_size=1", "--data-dir", str(raw_dir),
              "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    rc, out, run_dir = run_cli("--pipeline", "lofo", *common, "--cache")
    assert rc == 0, out  # not gated by default
    with (run_dir / "lofo.csv").open() as f:
        rows = list(csv.DictReader(f))
    # every flight held out once, in campaign order; holding out the pretraining flight
    # moves pretraining to the other one
    assert [(r["held_out"], r["pretrain_flight"]) for r in rows] == [
        ("30Oct24", "12Feb25"), ("12Feb25", "30Oct24"),
    ]  # fmt: skip
    for r in rows:
        assert float(r["r2_lo"]) <= float(r["r2"]) <= float(r["r2_hi"])
        assert float(r["bias_km_lo"]) <= float(r["bias_km"]) <= float(r["bias_km_hi"])
        assert int(r["n"]) > 0
    m = json.loads((run_dir / "metrics.json").read_text())
    mean = (float(rows[0]["r2"]) + float(rows[1]["r2"])) / 2
    assert m["summary"]["mean_r2"] == pytest.approx(mean) and m["summary"]["std_r2"] > 0
    assert m["verdict"].startswith("not gated") and "mean" in (run_dir / "lofo.html").read_text()

    # the same folds from kfp.local's cache, now gated on a mean no one-epoch model reaches
    rc, out, run_dir = run_cli("--pipeline", "lofo", *common, "--cache", "--gate-mean", "--threshold",
                               "0.99")  # fmt: skip
    assert rc == 1, out
    assert "gate FAILED on the mean over 2 folds" in out
    assert json.loads((run_dir / "metrics.json").read_text())["gate_passed"] is False
