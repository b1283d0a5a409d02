"""Kill-and-restart: a stage SIGKILLed after an epoch checkpoint and re-run with the same
out_dir must end exactly where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cloudml.training.checkpoint import load_checkpoint
from tests.support.train_fixtures import FAST, write_shards

SETTINGS = {**FAST, "epochs": 4, "warmup_steps": 6}


def _cmd(shard, out):
    cmd = [sys.executable, "-m", "cloudml", "pretrain", "--shard", str(shard), "--out", str(out)]
    for k, v in SETTINGS.items():
        cmd += ["--set", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
    return cmd


def _strip(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    shard = write_shards(tmp_path, ["30Oct24"], n=120, h=12, w=16)["30Oct24"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    ref = tmp_path / "ref"
    subprocess.run(_cmd(shard, ref), check=True, capture_output=True, env=env, timeout=120)

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(shard, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    try:
        deadline = time.monotonic() + 90
        while not (out / "last.pt").exists():
            assert proc.poll() is None, "stage exited before writing a checkpoint"
            assert time.monotonic() < deadline, "no last.pt within 90 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(out / "last.pt")["state"]
    assert 1 <= state["epoch"] < SETTINGS["epochs"] and not state["finished"]

    subprocess.run(_cmd(shard, out), check=True, capture_output=True, env=env, timeout=120)

    a = json.loads((ref / "history.json").read_text())
    b = json.loads((out / "history.json").read_text())
    assert len(a) == len(b) == SETTINGS["epochs"]
    for ra, rb in zip(_strip(a), _strip(b), strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert rb[k] == pytest.approx(ra[k], abs=1e-6), (ra["epoch"], k)
    sa = json.loads((ref / "summary.json").read_text())
    sb = json.loads((out / "summary.json").read_text())
    assert (sa["best_epoch"], sa["epochs_run"]) == (sb["best_epoch"], sb["epochs_run"])
    assert sb["best_val_loss"] == pytest.approx(sa["best_val_loss"], abs=1e-6)
    wa = load_checkpoint(ref / "model.pt")["model"]
    wb = load_checkpoint(out / "model.pt")["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)
