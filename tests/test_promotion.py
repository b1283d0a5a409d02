"""Promotion: better wins, worse does not, the pointer never names an incomplete model."""

from __future__ import annotations

import json
import threading
import time

import pytest

from cloudml.errors import StorageError
from cloudml.store.backends import LocalStore, S3Store
from cloudml.store.manifest import manifest_sha256, read_manifest, upload_dir
from cloudml.store.promotion import (
    best_record,
    decide,
    pointer_key,
    promote,
    read_champion,
    rollback,
    version_prefix,
)
from tests.support.servers import S3_ACCESS_KEY, S3_SECRET_KEY


def put_run(store, tmp_path, run_id: str, payload: bytes = b"") -> str:
    """A finished run's model folder uploaded to runs/tuned/<run_id>/model (with manifest)."""
    src = tmp_path / f"model-{run_id}"
    (src / "ckpt").mkdir(parents=True)
    (src / "ckpt" / "model.pt").write_bytes(b"weights-" + run_id.encode() + payload)
    (src / "model_card.md").write_text(f"# {run_id}\n")
    prefix = f"runs/tuned/{run_id}/model"
    upload_dir(store, src, prefix)
    return prefix


def assert_pointer_complete(store, pipeline="tuned"):
    ptr = read_champion(store, pipeline)
    assert ptr is not None
    assert ptr["model_prefix"] == version_prefix(pipeline, ptr["run_id"])
    assert manifest_sha256(store, ptr["model_prefix"]) == ptr["manifest_sha256"]
    return ptr


# --- pure --------------------------------------------------------------------------------------
def test_decide_and_best_record():
    assert decide(0.4, None) == (True, "no champion yet")
    champ = {"run_id": "a", "r2": 0.5}
    assert decide(0.51, champ)[0] and not decide(0.5, champ)[0] and not decide(0.2, champ)[0]
    assert not decide(float("nan"), None)[0]
    recs = [
        {"run_id": "x", "r2": 0.5, "time": "2026-01-02"},
        {"run_id": "y", "r2": 0.6, "time": "2026-01-03"},
        {"run_id": "z", "r2": 0.6, "time": "2026-01-01"},
    ]
    assert best_record(recs)["run_id"] == "z" and best_record([]) is None


# --- local store ---------------------------------------------------------------------------
def test_first_better_worse(tmp_path):
    store = LocalStore(tmp_path / "store")
    d1 = promote(store, "tuned", "r1", put_run(store, tmp_path, "r1"), 0.40)
    assert (
        d1["promoted"] and d1["champion_run_id_before"] is None and d1["champion_r2_before"] is None
    )
    ptr = assert_pointer_complete(store)
    assert (ptr["run_id"], ptr["r2"]) == ("r1", 0.40)
    assert read_manifest(store, ptr["model_prefix"]) == read_manifest(store, "runs/tuned/r1/model")
    assert store.get_bytes(f"{ptr['model_prefix']}/ckpt/model.pt") == b"weights-r1"

    d2 = promote(store, "tuned", "r2", put_run(store, tmp_path, "r2"), 0.55)
    assert d2["promoted"] and (d2["champion_run_id_before"], d2["champion_r2_before"]) == (
        "r1",
        0.40,
    )
    assert assert_pointer_complete(store)["run_id"] == "r2"

    d3 = promote(store, "tuned", "r3", put_run(store, tmp_path, "r3"), 0.50)
    assert not d3["promoted"] and "does not beat" in d3["reason"]
    assert d3["champion_r2_after"] == 0.55
    assert assert_pointer_complete(store)["run_id"] == "r2"
    assert store.list("models/tuned/versions/r3/") == []  # a loser is not copied
    # versions stay immutable and the earlier one is still there
    assert store.exists("models/tuned/versions/r1/manifest.json")


def test_nan_and_incomplete_runs_are_not_promoted(tmp_path):
    store = LocalStore(tmp_path / "store")
    assert not promote(store, "tuned", "n", put_run(store, tmp_path, "n"), float("nan"))["promoted"]
    store.put_bytes("runs/tuned/half/model/ckpt/model.pt", b"x")  # no manifest: unfinished
    with pytest.raises(StorageError, match="did not finish"):
        promote(store, "tuned", "half", "runs/tuned/half/model", 0.9)
    assert read_champion(store, "tuned") is None


def test_failure_during_copy_never_moves_the_pointer(tmp_path):
    store = LocalStore(tmp_path / "store")
    promote(store, "tuned", "old", put_run(store, tmp_path, "old"), 0.3)
    prefix = put_run(store, tmp_path, "new")
    real_put = store.put_file
    n = {"puts": 0}

    def dying_put(key, path):  # the "pod" dies after copying the first model object
        n["puts"] += 1
        if n["puts"] == 2:
            raise StorageError("simulated crash during copy")
        real_put(key, path)

    store.put_file = dying_put
    with pytest.raises(StorageError, match="simulated crash"):
        promote(store, "tuned", "new", prefix, 0.9)
    assert assert_pointer_complete(store)["run_id"] == "old"
    assert not store.exists("models/tuned/versions/new/manifest.json")
    assert not store.exists("models/tuned/records/new.json")
    # a re-run finishes the job
    store.put_file = real_put
    assert promote(store, "tuned", "new", prefix, 0.9)["promoted"]
    assert assert_pointer_complete(store)["run_id"] == "new"


def test_corrupted_run_model_is_refused(tmp_path):
    store = LocalStore(tmp_path / "store")
    prefix = put_run(store, tmp_path, "bad")
    store.put_bytes(f"{prefix}/ckpt/model.pt", b"bit rot")
    with pytest.raises(StorageError, match="checksum mismatch"):
        promote(store, "tuned", "bad", prefix, 0.9)
    assert read_champion(store, "tuned") is None
    assert not store.exists("models/tuned/versions/bad/manifest.json")


class SlowPointerStore(LocalStore):
    """Delays chosen writes to force the worst interleaving of two promoters."""

    def __init__(self, root, delays):
        super().__init__(root)
        self.delays = delays  # (key suffix, run_id) -> seconds

    def put_bytes(self, key, data):
        run = json.loads(data).get("run_id") if key.endswith(".json") else None
        for (suffix, rid), secs in self.delays.items():
            if key.endswith(suffix) and run == rid:
                time.sleep(secs)
        super().put_bytes(key, data)


def run_concurrently(*calls):
    barrier = threading.Barrier(len(calls))
    results, errors = {}, []

    def go(name, fn):
        barrier.wait()
        try:
            results[name] = fn()
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=go, args=c) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def test_concurrent_stale_pointer_write_is_repaired(tmp_path):
    """low lists records before high's exists, and its pointer write lands last: still high wins."""
    delays = {("records/high.json", "high"): 0.15, ("champion.json", "low"): 0.5}
    store = SlowPointerStore(tmp_path / "store", delays)
    p_low, p_high = put_run(store, tmp_path, "low"), put_run(store, tmp_path, "high")
    res = run_concurrently(
        ("low", lambda: promote(store, "tuned", "low", p_low, 0.41)),
        ("high", lambda: promote(store, "tuned", "high", p_high, 0.62)),
    )
    ptr = assert_pointer_complete(store)
    assert (ptr["run_id"], ptr["r2"]) == ("high", 0.62)
    assert res["high"]["promoted"] and not res["low"]["promoted"]
    assert "concurrent promotion won" in res["low"]["reason"]


@pytest.mark.parametrize("round_", range(4))
def test_concurrent_promotions_random_interleavings(tmp_path, round_):
    store = LocalStore(tmp_path / "store")
    runs = {f"run{i}": 0.3 + 0.07 * ((i + round_) % 4) for i in range(4)}
    prefixes = {r: put_run(store, tmp_path, r) for r in runs}
    run_concurrently(
        *[(r, lambda r=r: promote(store, "tuned", r, prefixes[r], runs[r])) for r in runs]
    )
    ptr = assert_pointer_complete(store)
    assert ptr["run_id"] == max(runs, key=runs.get)


def test_rollback(tmp_path):
    store = LocalStore(tmp_path / "store")
    promote(store, "tuned", "a", put_run(store, tmp_path, "a"), 0.4)
    promote(store, "tuned", "b", put_run(store, tmp_path, "b"), 0.6)
    ptr = rollback(store, "tuned", "a")
    assert ptr["run_id"] == "a" and assert_pointer_complete(store)["run_id"] == "a"
    assert store.exists("models/tuned/retired/b.json")
    # the next promotion competes with the restored model, not the rolled-back one
    assert promote(store, "tuned", "c", put_run(store, tmp_path, "c"), 0.5)["promoted"]
    assert rollback(store, "tuned", "b")["run_id"] == "b"  # a retired version can come back
    with pytest.raises(StorageError, match="no version 'zzz'"):
        rollback(store, "tuned", "zzz")


# --- real S3 -----------------------------------------------------------------------------------
@pytest.mark.servers
def test_concurrent_promotions_on_seaweedfs(s3_server, tmp_path):
    def new_store():
        return S3Store(
            s3_server.endpoint, "t-promote", access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY
        )

    setup = new_store()
    setup.ensure_bucket()
    p1, p2 = put_run(setup, tmp_path, "s1"), put_run(setup, tmp_path, "s2")
    s1, s2 = new_store(), new_store()  # one client per "pod"
    run_concurrently(
        ("s1", lambda: promote(s1, "tuned", "s1", p1, 0.45)),
        ("s2", lambda: promote(s2, "tuned", "s2", p2, 0.52)),
    )
    ptr = assert_pointer_complete(setup)
    assert ptr["run_id"] == "s2"
    assert setup.exists(pointer_key("tuned"))
    for key in setup.list("models/"):
        assert S3_SECRET_KEY.encode() not in setup.get_bytes(key)
