"""Champion model per pipeline: promote a gated run's model if its R² beats the champion's.

Layout under the store root (one pipeline = one preset name):

    models/<pipeline>/versions/<run_id>/...      immutable copy of the run's model + manifest
    models/<pipeline>/records/<run_id>.json      "this version is complete": run_id, r2, sha
    models/<pipeline>/retired/<run_id>.json      records taken out of the running by rollback
    models/<pipeline>/champion.json              the pointer deploys read

Order of writes, so that the pointer never names a half-uploaded model: copy every object
(verified against the run's manifest), write the version's manifest, read the copy back and
verify it, write the record, and only then write the pointer.

Concurrency without locks (S3 has no compare-and-swap the `minio` client exposes portably): the
pointer is not decided by "my R² beats what I read" alone, which two racing runs could both
believe; it is a cache of max(records by R²). Every promoter writes its record first, then
repeats "list records, read pointer, rewrite it if it is not the best record" until the pointer
reads back as the best. The last writer always re-checks after its write and sees every record
completed before that check, so when all promoters return, the pointer names the record with
the highest R² (ties: the earlier record) and always a complete version.
"""

from __future__ import annotations

import json
import logging
import math
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudml.errors import StorageError
from cloudml.store.backends import Store
from cloudml.store.manifest import (
    build_manifest,
    manifest_key,
    manifest_sha256,
    read_manifest,
    verify_file,
)

log = logging.getLogger(__name__)

SETTLE_ROUNDS = 50  # bound on pointer re-check rounds (each sleeps a few ms)


def model_root(pipeline: str) -> str:
    return f"models/{pipeline}"


def version_prefix(pipeline: str, run_id: str) -> str:
    return f"{model_root(pipeline)}/versions/{run_id}"


def pointer_key(pipeline: str) -> str:
    return f"{model_root(pipeline)}/champion.json"


def _record_key(pipeline: str, run_id: str, kind: str = "records") -> str:
    return f"{model_root(pipeline)}/{kind}/{run_id}.json"


# --- pure ---------------------------------------------------------------------------------
def best_record(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Highest R² wins; a tie goes to the earlier record, then the smaller run id."""
    if not records:
        return None
    return min(records, key=lambda r: (-r["r2"], r["time"], r["run_id"]))


def decide(challenger_r2: float, champion: dict[str, Any] | None) -> tuple[bool, str]:
    """(may promote, reason) for a challenger against the champion read before copying."""
    if not math.isfinite(challenger_r2):
        return False, f"challenger R² {challenger_r2} is not a finite number"
    if champion is None:
        return True, "no champion yet"
    if challenger_r2 > champion["r2"]:
        return (
            True,
            f"R² {challenger_r2:.4f} beats champion {champion['run_id']} ({champion['r2']:.4f})",
        )
    return False, (
        f"R² {challenger_r2:.4f} does not beat champion {champion['run_id']} ({champion['r2']:.4f})"
    )


def outcome_message(
    pipeline: str,
    run_id: str,
    r2: float,
    promoted: bool,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    who: str | None = None,
) -> str:
    """One sentence for a promotion's outcome, from the champion pointer before and after it:
    what became of this run and who is champion now (the task log and `cloudml run` both
    print it; a "champion of ..." line beside a reason like "no champion yet" read as if the
    promotion had failed). `who` names this run (default "run <run_id>")."""
    who = who or f"run {run_id}"
    if promoted:
        if before is None:
            return f"{who} is the first champion of {pipeline} (R² {r2:.4f})"
        return (
            f"{who} is the new champion of {pipeline}: R² {r2:.4f} beats run "
            f"{before['run_id']} ({before['r2']:.4f})"
        )
    if not math.isfinite(r2):
        return f"not promoted: R² {r2} is not a finite number"
    if (
        after is not None
        and after["run_id"] != run_id
        and (before is None or after["run_id"] != before["run_id"])
    ):
        return (
            f"not promoted: a concurrent promotion won: run {after['run_id']} "
            f"(R² {after['r2']:.4f}) >= {r2:.4f}"
        )
    if before is not None:
        return (
            f"not promoted: R² {r2:.4f} does not beat champion run {before['run_id']} "
            f"({before['r2']:.4f}), which stays"
        )
    return f"not promoted; {pipeline} has no champion"


# --- store I/O ----------------------------------------------------------------------------
def _read_json(store: Store, key: str) -> dict[str, Any] | None:
    if not store.exists(key):
        return None
    try:
        return json.loads(store.get_bytes(key))
    except StorageError:
        return None  # deleted between exists() and get (a concurrent rollback)
    except ValueError as e:
        raise StorageError(f"{store.describe(key)} is not valid JSON: {e}") from None


def read_champion(store: Store, pipeline: str) -> dict[str, Any] | None:
    """The champion pointer of `pipeline`, or None when nothing was ever promoted."""
    return _read_json(store, pointer_key(pipeline))


def _list_records(store: Store, pipeline: str, kind: str = "records") -> list[dict[str, Any]]:
    out = []
    for key in store.list(f"{model_root(pipeline)}/{kind}/"):
        rec = _read_json(store, key)
        if rec is not None:
            out.append(rec)
    return out


def copy_model(store: Store, src_prefix: str, dest_prefix: str) -> str:
    """Copy a complete prefix (with manifest) to dest_prefix, verified; returns manifest sha256.

    Every object is checked against the source manifest on the way, the destination manifest
    is written last, and the copy is read back and checked again before returning.
    An existing complete destination with the same objects is reused (a re-run); one with
    different objects is an error (versions are immutable).
    """
    manifest = read_manifest(store, src_prefix)
    objects = manifest["objects"]
    existing = (
        read_manifest(store, dest_prefix) if store.exists(manifest_key(dest_prefix)) else None
    )
    if existing is not None:
        if existing["objects"] != objects:
            raise StorageError(
                f"{store.describe(manifest_key(dest_prefix))}: version already exists with "
                "different objects; versions are immutable"
            )
        _verify_prefix(store, dest_prefix, existing)
        return manifest_sha256(store, dest_prefix)
    with tempfile.TemporaryDirectory(prefix="cloudml-promote-") as tmp:
        for rel, entry in objects.items():
            local = Path(tmp) / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            store.get_file(f"{src_prefix}/{rel}", local)
            verify_file(local, entry, store.describe(f"{src_prefix}/{rel}"))
            store.put_file(f"{dest_prefix}/{rel}", local)
    doc = build_manifest({k: (v["sha256"], v["size"]) for k, v in objects.items()})
    store.put_bytes(manifest_key(dest_prefix), json.dumps(doc, indent=1).encode())
    _verify_prefix(store, dest_prefix, doc)
    return manifest_sha256(store, dest_prefix)


def _verify_prefix(store: Store, prefix: str, manifest: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="cloudml-verify-") as tmp:
        for rel, entry in manifest["objects"].items():
            local = Path(tmp) / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            store.get_file(f"{prefix}/{rel}", local)
            verify_file(local, entry, store.describe(f"{prefix}/{rel}"))


def _record_is_complete(store: Store, rec: dict[str, Any]) -> bool:
    try:
        return manifest_sha256(store, rec["model_prefix"]) == rec["manifest_sha256"]
    except StorageError:
        return False


def settle_pointer(
    store: Store, pipeline: str, rounds: int = SETTLE_ROUNDS
) -> dict[str, Any] | None:
    """Make champion.json name the best record; repeat until it reads back as the best."""
    key = pointer_key(pipeline)
    for _ in range(rounds):
        best = best_record(_list_records(store, pipeline))
        current = read_champion(store, pipeline)
        if best is None or current == best:
            return current
        if not _record_is_complete(store, best):
            raise StorageError(
                f"record {best['run_id']} names {best['model_prefix']} whose manifest does not "
                "match its sha256; refusing to point the champion at it"
            )
        store.put_bytes(key, json.dumps(best, indent=1, sort_keys=True).encode())
        time.sleep(random.uniform(0.005, 0.05))  # let a racing promoter's write land first
    raise StorageError(f"{store.describe(key)}: champion pointer did not settle in {rounds} rounds")


def promote(store: Store, pipeline: str, run_id: str, run_prefix: str, r2: float) -> dict[str, Any]:
    """Promote the model under `run_prefix` (complete, with manifest) if its R² beats the champion.

    Returns {promoted, challenger_r2, champion_r2_before, champion_run_id_before,
    champion_run_id_after, champion_r2_after, model_prefix, reason}.
    """
    before = read_champion(store, pipeline)
    decision: dict[str, Any] = {
        "promoted": False,
        "challenger_r2": r2,
        "champion_r2_before": before["r2"] if before else None,
        "champion_run_id_before": before["run_id"] if before else None,
    }
    ok, reason = decide(r2, before)
    if not ok:
        reason = outcome_message(pipeline, run_id, r2, False, before, before)
        return {
            **decision,
            "champion_run_id_after": decision["champion_run_id_before"],
            "champion_r2_after": decision["champion_r2_before"],
            "model_prefix": before["model_prefix"] if before else None,
            "reason": reason,
        }
    dest = version_prefix(pipeline, run_id)
    log.info("promoting %s/%s: copying %s -> %s", pipeline, run_id, run_prefix, dest)
    sha = copy_model(store, run_prefix.strip("/"), dest)
    record = {
        "pipeline": pipeline,
        "run_id": run_id,
        "r2": float(r2),
        "model_prefix": dest,
        "manifest_sha256": sha,
        "source_prefix": run_prefix.strip("/"),
        "time": datetime.now(UTC).isoformat(timespec="microseconds"),
    }
    store.put_bytes(_record_key(pipeline, run_id), json.dumps(record, indent=1).encode())
    after = settle_pointer(store, pipeline)
    assert after is not None  # our own record exists
    promoted = after["run_id"] == run_id
    reason = outcome_message(pipeline, run_id, r2, promoted, before, after)
    return {
        **decision,
        "promoted": promoted,
        "champion_run_id_after": after["run_id"],
        "champion_r2_after": after["r2"],
        "model_prefix": after["model_prefix"],
        "reason": reason,
    }


def rollback(store: Store, pipeline: str, run_id: str) -> dict[str, Any]:
    """Point the champion back at the earlier version `run_id`; returns the new pointer.

    Every record ranked above it is retired (moved to retired/), so the next promotion has to
    beat the restored model, not the one that was rolled back.
    """
    records = {r["run_id"]: r for r in _list_records(store, pipeline)}
    retired = {r["run_id"]: r for r in _list_records(store, pipeline, "retired")}
    target = records.get(run_id) or retired.get(run_id)
    if target is None:
        raise StorageError(
            f"rollback of {pipeline!r}: no version {run_id!r} under "
            f"{store.describe(model_root(pipeline) + '/records/')}"
        )
    if not _record_is_complete(store, target):
        raise StorageError(
            f"rollback of {pipeline!r}: version {target['model_prefix']} is incomplete or changed"
        )
    if run_id in retired:
        store.put_bytes(_record_key(pipeline, run_id), json.dumps(target, indent=1).encode())
        store.delete(_record_key(pipeline, run_id, "retired"))
    for rec in records.values():
        if rec["run_id"] != run_id and best_record([rec, target]) is rec:
            store.put_bytes(
                _record_key(pipeline, rec["run_id"], "retired"), json.dumps(rec, indent=1).encode()
            )
            store.delete(_record_key(pipeline, rec["run_id"]))
    pointer = settle_pointer(store, pipeline)
    log.info("rolled back %s to %s", pipeline, run_id)
    return pointer or target


__all__ = [
    "promote",
    "rollback",
    "read_champion",
    "copy_model",
    "settle_pointer",
    "best_record",
    "decide",
    "outcome_message",
]
