"""The sweep end to end on KFP's local runner (slow): two variants at the tiny settings of
tests/test_local_run.py, one member each. A one-epoch model learns nothing, so the gate is
set where any finite R² passes: this tests the plumbing (table rows, ranking on the
selection split, the winner through gate and promotion), not the models."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import pytest

from cloudml.cli import main
from tests.test_local_run import TINY, raw_dir  # noqa: F401 - the 2-flight campaign fixture

VARIANTS = """\
- name: tuned
  overrides: {}
- name: wd_high
  overrides: {weight_decay: 0.08, learning_rate: 0.002}
"""


def run_cli(*args: str) -> tuple[int, str, Path]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["run", *args])
    out = buf.getvalue()
    last = out.strip().splitlines()[-1].split()
    assert last[:2] == ["run", "folder"], out
    return rc, out, Path(last[2])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sweep_ranks_on_selection_split_and_gates_the_winner(tmp_path, raw_dir, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    (tmp_path / "v.yaml").write_text(VARIANTS)
    rc, out, run_dir = run_cli(
        "--pipeline", "sweep", "--variants", str(tmp_path / "v.yaml"), *TINY,
        "--set", "ensemble_size=1", "--threshold=-1e9", "--min-std-ratio=0", "--no-baseline",
        "--data-dir", str(raw_dir), "--runs-dir", str(tmp_path / "runs"),
    )  # fmt: skip
    assert rc == 0, out
    assert run_dir.name.startswith("sweep-")
    with (run_dir / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["variant"] for r in rows) == ["tuned", "wd_high"]
    assert [r["rank"] for r in rows] == ["1", "2"]
    sel = [float(r["selection_r2"]) for r in rows]
    assert sel[0] >= sel[1]  # ranked on the selection split, whatever the validation says
    assert [r["winner"] for r in rows] == ["True", "False"]
    for r in rows:
        assert float(r["val_r2_lo"]) <= float(r["val_r2"]) <= float(r["val_r2_hi"])
        assert int(r["val_n"]) > 0 and float(r["train_seconds"]) > 0
    html = (run_dir / "comparison.html").read_text()
    assert "not used for ranking" in html and "(winner)" in html
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["winner"] == rows[0]["variant"] and m["gate_passed"] is True
    # the winner's own figures went to the gate, and its model was promoted
    assert m["winner_gate_inputs"]["r2"] == pytest.approx(float(rows[0]["val_r2"]))
    assert m["promoted"] is True and "first champion of sweep" in m["promotion"]
    champion = tmp_path / "build" / "kfp-local" / "store" / "models" / "sweep" / "champion.json"
    assert champion.is_file()
    model_cfg = json.loads((run_dir / "model" / "config.json").read_text())
    assert model_cfg["preset"] == f"sweep.{rows[0]['variant']}"
    assert "gate PASSED" in out and f"winner {rows[0]['variant']}" in out
    log = (run_dir / "pipeline.log").read_text()
    assert "Task 'rank-variants' finished with status" in log
    assert "Task 'gate' finished with status" in log
