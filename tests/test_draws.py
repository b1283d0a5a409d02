"""bench/draws.py: ensembles formed from saved single-member predictions, the baseline and
the gate's pass counts, on draws whose figures are known by construction."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from cloudml.data.shard import write_shard
from tests.support.train_fixtures import make_shard

BENCH = Path(__file__).resolve().parents[1] / "bench" / "draws.py"


@pytest.fixture
def draws(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("draws", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "OUT", tmp_path)
    shards = tmp_path / "c7" / "shards"
    shards.mkdir(parents=True)
    for i, f in enumerate(["30Oct24", "04Nov24", "12Feb25"]):
        write_shard(shards / f"{f}.h5", make_shard(f, n=60, seed=i))
    return mod, tmp_path


def _write(d: Path, y: np.ndarray, p: np.ndarray) -> None:
    d.mkdir(parents=True)
    with open(d / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time_utc", "cbh_true_km", "cbh_pred_km"])
        for i, (a, b) in enumerate(zip(y, p, strict=True)):
            w.writerow([i, a, b])


def test_ensembles_average_members_and_count_gate_passes(draws):
    mod, out = draws
    y = np.linspace(0.2, 1.8, 60)
    noise = np.random.default_rng(0).normal(0, 0.3, (4, 60))
    noise -= noise.mean(axis=0)  # the four members' errors cancel exactly in their mean
    for s, e in zip((42, 43, 44, 45), noise, strict=True):
        _write(out / "c7" / f"s{s}", y, y + e)
    text = mod.report(4)
    row = next(line for line in text.splitlines() if line.startswith("| 7 |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[1] == "4 (42–45)"
    # the one 4-member ensemble is perfect (R² 1), every single member is not
    assert len(cells) == 12 == text.splitlines()[0].count("|") - 1
    assert cells[7] == "1.000" and cells[8] == "1.000" and cells[10] == "0.000"
    singles = [1 - np.sum(e**2) / np.sum((y - y.mean()) ** 2) for e in noise]
    assert cells[3] == f"{np.median(singles):.3f}"
    assert cells[4] == f"{min(singles):.3f} … {max(singles):.3f}"
    baseline = float(cells[2])
    passing = sum(r > 0.3 and r > baseline for r in singles)
    assert cells[6] == f"{passing}/4" and cells[11] == "1/1"


def test_import_run_splits_members_into_draws(draws, tmp_path):
    mod, out = draws
    run = tmp_path / "run"
    run.mkdir()
    (run / "predictions.csv").write_text(
        "time_utc,cbh_true_km,cbh_pred_km,member_42_km,member_43_km,baseline_km\n"
        "1.0,1.0,1.1,1.2,1.0,0.9\n2.0,2.0,1.9,1.8,2.0,1.5\n"
    )
    assert mod.import_run(run, 7) == [42, 43]
    rows = list(csv.DictReader(open(out / "c7" / "s43" / "predictions.csv")))
    assert [r["cbh_pred_km"] for r in rows] == ["1.0", "2.0"]


def test_ensemble_sizes_side_by_side(draws):
    """The K comparison: one row per K with the number of K-combinations, their median and
    sd, the sd against the single members' and the pass count; K = 4 of 4 members is one
    combination whose errors cancel (sd 0, R² 1)."""
    mod, out = draws
    y = np.linspace(0.2, 1.8, 60)
    noise = np.random.default_rng(1).normal(0, 0.3, (4, 60))
    noise -= noise.mean(axis=0)
    for s, e in zip((42, 43, 44, 45), noise, strict=True):
        _write(out / "c7" / f"s{s}", y, y + e)
    text = mod.report(2, compare=(1, 2, 4))
    rows = [[x.strip() for x in line.split("|")[1:-1]] for line in text.splitlines()
            if line.startswith("| 7 | ")]  # fmt: skip
    cells = {int(c[1]): c for c in rows if len(c) == 7}  # the main table's row has 12 cells
    assert sorted(cells) == [1, 2, 4]
    assert [cells[k][2] for k in (1, 2, 4)] == ["4", "6", "1"]
    singles = [1 - np.sum(e**2) / np.sum((y - y.mean()) ** 2) for e in noise]
    assert cells[1][3] == f"{np.median(singles):.3f}" and cells[1][5] == "1.00"
    pairs = []
    for i in range(4):
        for j in range(i + 1, 4):
            e = (noise[i] + noise[j]) / 2
            pairs.append(1 - np.sum(e**2) / np.sum((y - y.mean()) ** 2))
    assert cells[2][4] == f"{np.std(pairs, ddof=1):.3f}"
    assert cells[2][5] == f"{np.std(pairs, ddof=1) / np.std(singles, ddof=1):.2f}"
    assert cells[4][3] == "1.000" and cells[4][4] == "0.000" and cells[4][6] == "1/1"
