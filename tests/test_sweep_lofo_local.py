"""The sweep ranked on leave-one-flight-out over the training flights (pipeline sweep-lofo),
end to end on KFP's local runner (slow): a 3-flight campaign (two training flights, so two
folds per variant) at the tiny settings of tests/test_local_run.py, two variants, one
member each. A one-epoch model learns nothing, so the gate is set where any finite R²
passes: this tests the plumbing (the folds, the ranking on their mean, the table, the
winner through gate and promotion), not the models."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cloudml.cluster.local_run import ensure_campaign
from tests.test_local_run import TINY
from tests.test_sweep_local import VARIANTS, run_cli

FLIGHTS = ("30Oct24", "04Nov24", "12Feb25")


@pytest.fixture(scope="module")
def raw3(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("raw3")
    ensure_campaign(d, FLIGHTS, "local")
    return d


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sweep_lofo_ranks_on_the_training_flights_folds(tmp_path, raw3, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "v.yaml").write_text(VARIANTS)
    tiny = [a if not a.startswith("flights=") else f"flights=[{','.join(FLIGHTS)}]" for a in TINY]
    rc, out, run_dir = run_cli(
        "--pipeline", "sweep-lofo", "--variants", str(tmp_path / "v.yaml"), *tiny,
        "--set", "ensemble_size=1", "--threshold=-1e9", "--min-std-ratio=0", "--no-baseline",
        "--data-dir", str(raw3), "--runs-dir", str(tmp_path / "runs"),
    )  # fmt: skip
    assert rc == 0, out
    assert "each: 1 model + 2 folds over its training flights" in out
    with (run_dir / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["variant"] for r in rows) == ["tuned", "wd_high"]
    assert all(r["ranked_on"] == "lofo" for r in rows)
    lofo = [float(r["lofo_r2"]) for r in rows]
    assert lofo[0] >= lofo[1]  # ranked on the folds' mean, whatever the other columns say
    for r in rows:
        assert float(r["lofo_r2_min"]) <= float(r["lofo_r2"]) <= float(r["lofo_r2_max"])
        assert int(r["val_n"]) > 0
    # each variant's two folds, one per training flight, were scored on that flight
    run_root = next(p for p in (tmp_path / "build" / "kfp-local").iterdir()
                    if p.name.startswith("sweep-lofo-"))  # fmt: skip
    fold_cfgs = [json.loads(p.read_text()) for p in run_root.rglob("evaluation/config.json")]
    folds = sorted((c["preset"], c["validation_flight"], tuple(c["flights"]))
                   for c in fold_cfgs if ".lofo." in c["preset"])  # fmt: skip
    assert folds == [
        (f"sweep.{v}.lofo.{f}", f, ("30Oct24", "04Nov24"))
        for v in ("tuned", "wd_high") for f in ("04Nov24", "30Oct24")
    ]  # fmt: skip
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["winner"] == rows[0]["variant"] and m["gate_passed"] is True
    assert f"winner {rows[0]['variant']} (ranked on leave-one-training-flight-out R²" in out
    assert "LOFO R² (ranked)" in out
    assert (
        "leave-one-training-flight-out R² (ranked on" in (run_dir / "comparison.html").read_text()
    )
