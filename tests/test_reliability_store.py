"""Object-store faults and concurrency on the real SeaweedFS S3 gateway.

- the gateway stopped for a while during a pipeline step (ingest from s3://) and restarted:
  the step completes and its inputs verify;
- stopped for good: a clear error naming the endpoint, no shard, no manifest without all its
  objects, no champion pointer to an incomplete version;
- two runs at once: distinct run prefixes never overwrite each other; two promoting
  PROCESSES leave the pointer on the best complete version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from cloudml.config import load_config
from cloudml.errors import StorageError
from cloudml.steps import run_ingest
from cloudml.store.backends import S3Store
from cloudml.store.layout import run_prefix
from cloudml.store.manifest import (
    download_dir,
    manifest_key,
    manifest_sha256,
    read_manifest,
    upload_dir,
)
from cloudml.store.promotion import pointer_key, promote, read_champion, version_prefix
from cloudml.store.retry import RetryPolicy
from tests.support.rawfiles import flight_arrays, write_flight
from tests.support.servers import S3_ACCESS_KEY, S3_SECRET_KEY

pytestmark = pytest.mark.servers

CFG_JSON = load_config("tuned", {"temporal_frames": 3}).to_json()


BUCKET = "t-reliability"  # one bucket for every reliability test: SeaweedFS grows 7 volumes each


def _store(srv, prefix, policy=None):
    s = S3Store(srv.endpoint, BUCKET, prefix=prefix, access_key=S3_ACCESS_KEY,
                secret_key=S3_SECRET_KEY, retry=policy)  # fmt: skip
    s.ensure_bucket()
    return s


def _upload_flight(srv, bucket, tmp_path, flight="30Oct24"):
    write_flight(tmp_path / "raw", flight, flight_arrays(n_frames=20))
    upload_dir(_store(srv, bucket), tmp_path / "raw" / flight, f"raw/{flight}")


def _stop_after_first(monkeypatch, srv, method, restart: bool) -> list[threading.Thread]:
    """Wrap S3Store.<method>: after its first call the gateway stops (and restarts if asked)."""
    real = getattr(S3Store, method)
    restarter: list[threading.Thread] = []

    def wrapped(self, *a, **kw):
        out = real(self, *a, **kw)
        if not restarter:
            srv.stop()
            t = threading.Thread(target=srv.start if restart else (lambda: None))
            restarter.append(t)
            t.start()
        return out

    monkeypatch.setattr(S3Store, method, wrapped)
    return restarter


def test_ingest_from_s3_survives_gateway_restart(s3_restartable, tmp_path, monkeypatch, caplog):
    srv = s3_restartable
    _upload_flight(srv, "ingest", tmp_path)
    for k, v in srv.env().items():
        monkeypatch.setenv(k, v)
    restarter = _stop_after_first(monkeypatch, srv, "get_file", restart=True)
    summary = run_ingest("s3://t-reliability/ingest/raw", "30Oct24", CFG_JSON, tmp_path / "out")
    restarter[0].join()
    assert any("transient error" in r.getMessage() for r in caplog.records)
    assert summary["n_samples"] == 18
    # the shard records the sha256 of exactly the raw files that were uploaded
    want = read_manifest(_store(srv, "ingest"), "raw/30Oct24")["objects"]
    assert summary["raw_sha256"] == {k: v["sha256"] for k, v in want.items()}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "30Oct24.h5", "30Oct24.summary.json"]  # fmt: skip


def test_ingest_from_s3_gateway_gone_fails_clearly_leaving_nothing(
    s3_restartable, tmp_path, monkeypatch
):
    srv = s3_restartable
    _upload_flight(srv, "gone", tmp_path)
    for k, v in srv.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("CLOUDML_STORE_RETRIES", "2")
    _stop_after_first(monkeypatch, srv, "get_file", restart=False)
    with pytest.raises(StorageError) as e:
        run_ingest("s3://t-reliability/gone/raw", "30Oct24", CFG_JSON, tmp_path / "out")
    msg = str(e.value)
    assert "unreachable" in msg and srv.endpoint in msg and "t-reliability/gone/raw/30Oct24/" in msg
    assert list((tmp_path / "out").iterdir()) == []


def test_promotion_with_gateway_gone_leaves_pointer_on_complete_version(
    s3_restartable, tmp_path, monkeypatch
):
    srv = s3_restartable
    policy = RetryPolicy(attempts=2, base_delay_s=0.05, max_total_s=2.0)
    store = _store(srv, "promote", policy)
    for run_id in ("old", "new"):
        src = tmp_path / run_id
        src.mkdir()
        for name in ("model.pt", "model_card.md", "metrics.json"):
            (src / name).write_text(f"{run_id} {name}")
        upload_dir(store, src, f"{run_prefix('tuned', run_id)}/model")
    promote(store, "tuned", "old", f"{run_prefix('tuned', 'old')}/model", 0.4)
    _stop_after_first(monkeypatch, srv, "put_file", restart=False)  # dies mid-copy
    with pytest.raises(StorageError, match="unreachable"):
        promote(store, "tuned", "new", f"{run_prefix('tuned', 'new')}/model", 0.9)
    monkeypatch.undo()
    srv.start()
    ptr = read_champion(store, "tuned")
    assert ptr["run_id"] == "old"
    assert manifest_sha256(store, ptr["model_prefix"]) == ptr["manifest_sha256"]
    assert not store.exists(manifest_key(version_prefix("tuned", "new")))
    assert not store.exists("models/tuned/records/new.json")
    # after the outage a re-run of the promotion finishes it
    assert promote(store, "tuned", "new", f"{run_prefix('tuned', 'new')}/model", 0.9)["promoted"]


# --- concurrency: separate processes, as two pods would be ------------------------------------
UPLOADER = """
import sys
from pathlib import Path
from cloudml.store.backends import open_store
from cloudml.store.layout import run_prefix
from cloudml.store.manifest import upload_dir
src, run_id = sys.argv[1:3]
upload_dir(open_store("s3://t-reliability/two"), Path(src), run_prefix("tuned", run_id))
"""

PROMOTER = """
import sys
from cloudml.store.promotion import promote
from cloudml.store.backends import open_store
run_id, r2 = sys.argv[1], float(sys.argv[2])
promote(open_store("s3://t-reliability/race"), "tuned", run_id, f"runs/tuned/{run_id}/model", r2)
"""


def _run_all(code: str, argvs: list[list[str]], env: dict[str, str]) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", code, *a], env=env, stderr=subprocess.PIPE)
        for a in argvs
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]


def test_two_concurrent_runs_never_overwrite_each_other(s3_server, tmp_path):
    _store(s3_server, "two")
    env = {**os.environ, **s3_server.env()}
    trees = {}
    for run_id in ("tuned-a", "tuned-b"):
        src = tmp_path / run_id
        for i in range(8):  # same names in both runs, different bytes
            (src / "model").mkdir(parents=True, exist_ok=True)
            (src / "model" / f"part{i}.bin").write_bytes(run_id.encode() * (200 + i))
        (src / "metrics.json").write_text(json.dumps({"run": run_id}))
        trees[run_id] = src
    _run_all(UPLOADER, [[str(p), r] for r, p in trees.items()], env)
    store = _store(s3_server, "two")
    for run_id, src in trees.items():
        out = tmp_path / f"back-{run_id}"
        download_dir(store, run_prefix("tuned", run_id), out)  # every object sha256-verified
        for p in src.rglob("*"):
            if p.is_file():
                assert (out / p.relative_to(src)).read_bytes() == p.read_bytes()


def test_promoting_processes_leave_the_pointer_on_the_best_complete_version(s3_server, tmp_path):
    store = _store(s3_server, "race")
    runs = {"p1": 0.41, "p2": 0.77, "p3": 0.55}
    for run_id in runs:
        src = tmp_path / run_id
        src.mkdir()
        (src / "model.pt").write_bytes(b"w" * 5000 + run_id.encode())
        upload_dir(store, src, f"runs/tuned/{run_id}/model")
    env = {**os.environ, **s3_server.env()}
    _run_all(PROMOTER, [[r, str(v)] for r, v in runs.items()], env)
    ptr = read_champion(store, "tuned")
    assert ptr["run_id"] == "p2" and ptr["r2"] == pytest.approx(0.77)
    assert ptr["model_prefix"] == version_prefix("tuned", "p2")
    assert manifest_sha256(store, ptr["model_prefix"]) == ptr["manifest_sha256"]
    download_dir(store, ptr["model_prefix"], tmp_path / "champion")
    assert (tmp_path / "champion" / "model.pt").read_bytes().endswith(b"p2")
    assert store.exists(pointer_key("tuned"))


def test_run_ids_are_separate_prefixes():
    a, b = run_prefix("tuned", "r1"), run_prefix("tuned", "r10")
    assert a == "runs/tuned/r1" and not f"{b}/".startswith(f"{a}/")
    with pytest.raises(StorageError, match="invalid object key"):
        run_prefix("tuned", "../other")
