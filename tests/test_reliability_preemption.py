"""Preemption: a training task SIGKILLed mid-run and retried on a NEW pod (empty local disk)
resumes from the state it synced to the artifact store and ends exactly where an uninterrupted
run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cloudml.config import load_config
from cloudml.errors import StorageError
from cloudml.store.backends import LocalStore, S3Store, open_store
from cloudml.store.resume import (
    read_state,
    restore_stage_state,
    save_stage_state,
    state_prefix,
    sync_on_epoch,
)
from cloudml.training.checkpoint import load_checkpoint
from tests.support.servers import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.support.train_fixtures import FAST, assert_same_run, write_shards

SETTINGS = {**FAST, "epochs": 5, "warmup_steps": 6, "early_stopping_patience": 50}
# each member's state lives under its own prefix: <stage>-seed<seed>
PREFIX = state_prefix("tuned", "run-1", f"pretrain-seed{load_config('tuned', SETTINGS).train.seed}")

# One "pod" runs exactly what the KFP pretrain component runs: steps.run_pretrain with the
# stage-state key (the component derives it from code, config and data:
# steps.common.training_state_key; a literal one here); CLOUDML_STORE (from the environment, as the cluster's ConfigMap sets it) is where
# the stage state goes.
POD = """
import logging, sys
from cloudml.steps import run_pretrain
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
shard_dir, config_json, out, run_id = sys.argv[1:5]
run_pretrain([shard_dir], config_json, out, run_id)
"""


def _pod(store_uri, shard, out, env):
    # one intra-op thread: on a shared 2-core box two OpenMP threads spin against other load
    # and a step gets ~50x slower; reference and resumed pods use the same setting
    env = {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PUSHGATEWAY_URL", None)
    if store_uri:
        env["CLOUDML_STORE"] = store_uri
    else:
        env.pop("CLOUDML_STORE", None)
    config_json = load_config("tuned", SETTINGS).to_json()
    cmd = [sys.executable, "-c", POD, str(shard.parent), config_json, str(out), "run-1"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The shard and one uninterrupted run (no store) to compare against."""
    root = tmp_path_factory.mktemp("preempt-ref")
    shard = write_shards(root / "shards", ["30Oct24"], n=96, h=12, w=16)["30Oct24"]
    proc = _pod("", shard, root / "ref", dict(os.environ))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out.decode()[-3000:]
    return shard, root / "ref"


def _kill_after_epoch_2_then_resume(uri, store, shard, tmp_path, env):
    pod1 = tmp_path / "pod1"
    proc = _pod(uri, shard, pod1, env)
    try:
        deadline = time.monotonic() + 90
        while (read_state(store, PREFIX) or {"epoch": 0})["epoch"] < 2:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no epoch 2 in the store within 90 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # the node is gone: no cleanup, no flush
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    saved = read_state(store, PREFIX)
    assert saved is not None and 2 <= saved["epoch"] < SETTINGS["epochs"]

    pod2 = tmp_path / "pod2"  # the retry runs on a new pod: nothing on its disk
    assert not pod2.exists()
    proc = _pod(uri, shard, pod2, env)
    out, _ = proc.communicate(timeout=120)
    text = out.decode()
    assert proc.returncode == 0, text[-3000:]
    assert f"pretrain: resuming after epoch {saved['epoch']} from" in text, text[-3000:]
    assert f"resuming from {pod2 / 'last.pt'} after epoch {saved['epoch']}" in text
    return pod2


@pytest.mark.slow
def test_preempted_pretrain_resumes_from_local_store_on_new_pod(reference, tmp_path):
    shard, ref = reference
    store_dir = tmp_path / "store"
    out = _kill_after_epoch_2_then_resume(
        str(store_dir), LocalStore(store_dir), shard, tmp_path, dict(os.environ)
    )
    assert_same_run(ref, out, SETTINGS["epochs"])
    final = read_state(LocalStore(store_dir), PREFIX)
    assert final["epoch"] == SETTINGS["epochs"]
    # superseded epoch folders were removed: state.json + one folder of STATE_FILES
    assert len(LocalStore(store_dir).list(PREFIX + "/")) == 1 + len(final["objects"])


@pytest.mark.slow
@pytest.mark.servers
def test_preempted_pretrain_resumes_from_seaweedfs_on_new_pod(reference, s3_server, tmp_path):
    shard, ref = reference
    env = {**os.environ, **s3_server.env()}
    store = S3Store(s3_server.endpoint, "t-reliability", prefix="preempt",
                    access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY)  # fmt: skip
    store.ensure_bucket()
    out = _kill_after_epoch_2_then_resume("s3://t-reliability/preempt", store, shard, tmp_path, env)
    assert_same_run(ref, out, SETTINGS["epochs"])


# --- state sync units (no training) -----------------------------------------------------------
def _fake_stage(out, epoch):
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.json").write_text(json.dumps([{"epoch": e} for e in range(1, epoch + 1)]))
    torch.save({"state": {"epoch": epoch}, "model": {}, "model_config": {}, "temporal_frames": 3,
                "scalers": {}, "stage": "pretrain"}, out / "last.pt")  # fmt: skip
    (out / "model.pt").write_bytes(b"best weights %d" % epoch)


def test_restore_refuses_tampered_state_and_leaves_out_dir_alone(tmp_path):
    store = LocalStore(tmp_path / "store")
    _fake_stage(tmp_path / "a", 3)
    doc = save_stage_state(store, PREFIX, tmp_path / "a")
    key = f"{PREFIX}/{doc['objects']['last.pt']['key']}"
    store.put_bytes(key, store.get_bytes(key) + b"\0")  # one byte appended in the store
    with pytest.raises(StorageError) as e:
        restore_stage_state(store, PREFIX, tmp_path / "b")
    msg = str(e.value)
    assert store.describe(key) in msg and doc["objects"]["last.pt"]["sha256"] in msg
    assert "tampered" in msg
    assert not (tmp_path / "b").exists() or list((tmp_path / "b").iterdir()) == []


def test_restore_keeps_a_newer_local_state_and_fresh_start_is_zero(tmp_path):
    store = LocalStore(tmp_path / "store")
    assert restore_stage_state(store, PREFIX, tmp_path / "empty") == 0
    _fake_stage(tmp_path / "a", 2)
    save_stage_state(store, PREFIX, tmp_path / "a")
    _fake_stage(tmp_path / "b", 4)  # same pod, store one epoch behind: keep local
    before = (tmp_path / "b" / "model.pt").read_bytes()
    assert restore_stage_state(store, PREFIX, tmp_path / "b") == 4
    assert (tmp_path / "b" / "model.pt").read_bytes() == before
    assert restore_stage_state(store, PREFIX, tmp_path / "c") == 2
    assert (tmp_path / "c" / "model.pt").read_bytes() == b"best weights 2"


def test_sync_survives_store_outage_with_a_warning_unless_strict(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("MINIO_ENDPOINT", "127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setenv("CLOUDML_STORE_RETRIES", "1")
    store = open_store("s3://t-nowhere")
    _fake_stage(tmp_path / "a", 1)
    seen = []
    sync_on_epoch(store, PREFIX, tmp_path / "a", seen.append)({"epoch": 1})
    assert seen == [{"epoch": 1}]
    assert "epoch 1 not saved" in caplog.text and "127.0.0.1:9" in caplog.text
    with pytest.raises(StorageError, match="unreachable"):
        sync_on_epoch(store, PREFIX, tmp_path / "a", strict=True)({"epoch": 1})


def test_unreadable_local_last_pt_is_replaced_from_the_store(tmp_path, caplog):
    store = LocalStore(tmp_path / "store")
    _fake_stage(tmp_path / "a", 2)
    save_stage_state(store, PREFIX, tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "last.pt").write_bytes(b"half a checkpoint")  # e.g. a disk error
    assert restore_stage_state(store, PREFIX, tmp_path / "b") == 2
    assert "unusable" in caplog.text and str(tmp_path / "b" / "last.pt") in caplog.text
    assert load_checkpoint(tmp_path / "b" / "last.pt")["state"]["epoch"] == 2
