"""Kill-and-restart: a stage SIGKILLed after an epoch checkpoint and re-run with the same
out_dir must end exactly where an uninterrupted run ends."""

import os
import signal
import subprocess
import sys
import time

import pytest

from cloudml.training.checkpoint import load_checkpoint
from tests.support.train_fixtures import FAST, assert_same_run, write_shards

SETTINGS = {**FAST, "epochs": 4, "warmup_steps": 6}


def _cmd(shard, out):
    cmd = [sys.executable, "-m", "cloudml", "pretrain", "--shard", str(shard), "--out", str(out)]
    for k, v in SETTINGS.items():
        cmd += ["--set", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
    return cmd


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

    assert_same_run(ref, out, SETTINGS["epochs"])
