"""Resume after preemption: training state synced to the artifact store, finished shards reused.

In the pipeline the `run_id` of a training stage is not the KFP run id but `result_key(...)`
of what determines the stage's result (code, config, data; steps.common.training_state_key):
the run id would make every run's training inputs differ and so defeat KFP's cache, while
the content key is the same for an unchanged re-run and for a retry on a new pod alike.

A KFP retry after a lost node runs the task again on a NEW pod whose local disk is empty, so the
stages' own resume (out_dir/last.pt) has nothing to resume from. Here a stage's state follows it
into the store after every epoch and is brought back before the stage starts:

    prefix = state_prefix("tuned", run_id, "pretrain")     # runs/tuned/<run id>/pretrain/state
    restore_stage_state(store, prefix, out_dir)            # download + verify, if any
    pretrain(shards, cfg, out_dir, on_epoch=sync_on_epoch(store, prefix, out_dir, log_epoch))

Store layout under `prefix`: every save uploads last.pt, model.pt and history.json under a fresh
`e<epoch>-<token>/` folder (never overwritten), then one PUT of `state.json` naming those keys
with their sha256 and size. state.json is the only mutable object and a single PUT is atomic, so
a reader sees either the previous complete state or the new one; superseded folders are deleted
afterwards. A restored file whose sha256 differs from state.json is refused.

Ingest needs no such help: each flight is its own KFP task, so a retry redoes only that flight,
and KFP's cache (keyed on the raw-data fingerprint) reuses finished flights across re-runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudml.errors import CloudMLError, StorageError
from cloudml.fileio import sha256_file
from cloudml.store.backends import Store
from cloudml.store.layout import run_prefix

log = logging.getLogger(__name__)

STATE_NAME = "state.json"
STATE_VERSION = 1
# last.pt is the resume point; model.pt holds the best weights so far (only rewritten on a
# better epoch, so it must travel too); history.json is what the report reads.
STATE_FILES = ("history.json", "model.pt", "last.pt")  # restore order: last.pt goes last


def result_key(parts: dict[str, Any]) -> str:
    """A stage-state key from everything that determines a training stage's result (code,
    config, input data; see steps.common.training_state_key): "k" + 24 hex digits of the
    sha256 of their canonical JSON. Equal inputs give equal keys, across runs (pure)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return "k" + hashlib.sha256(blob).hexdigest()[:24]


def state_prefix(pipeline: str, run_id: str, stage: str) -> str:
    """runs/<pipeline>/<run id>/<stage>/state: one run's one stage (run ids never collide)."""
    return f"{run_prefix(pipeline, run_id)}/{stage}/state"


def _state_key(prefix: str) -> str:
    return f"{prefix.strip('/')}/{STATE_NAME}"


def _history_epoch(out_dir: Path) -> int:
    """Last epoch recorded in out_dir/history.json (0 when there is none)."""
    p = out_dir / "history.json"
    if not p.is_file():
        return 0
    rows = json.loads(p.read_text())
    return int(rows[-1]["epoch"]) if rows else 0


def read_state(store: Store, prefix: str) -> dict[str, Any] | None:
    """The stored state document, or None when this stage never saved one."""
    key = _state_key(prefix)
    if not store.exists(key):
        return None
    try:
        doc = json.loads(store.get_bytes(key))
        for name, entry in doc["objects"].items():
            if name not in STATE_FILES or not isinstance(entry["sha256"], str):
                raise ValueError(name)
        int(doc["epoch"])
    except (ValueError, KeyError, TypeError) as e:
        raise StorageError(
            f"{store.describe(key)}: malformed stage state ({e!r}); expected "
            '{"epoch": N, "objects": {name: {"key", "sha256", "size"}}}'
        ) from None
    return doc


def save_stage_state(store: Store, prefix: str, out_dir: str | Path) -> dict[str, Any] | None:
    """Upload out_dir's resume state under `prefix`; returns the published state.json document.

    Objects first (fresh keys), then state.json in one PUT, then old folders are removed.
    None when out_dir holds no last.pt yet.
    """
    out_dir = Path(out_dir)
    prefix = prefix.strip("/")
    present = [n for n in STATE_FILES if (out_dir / n).is_file()]
    if "last.pt" not in present:
        return None
    epoch = _history_epoch(out_dir)
    folder = f"e{epoch:04d}-{secrets.token_hex(4)}"
    objects: dict[str, dict[str, Any]] = {}
    for name in present:
        path = out_dir / name
        # hash what is uploaded: the stage is paused inside on_epoch, nothing rewrites the file
        objects[name] = {
            "key": f"{folder}/{name}",
            "sha256": sha256_file(path),
            "size": path.stat().st_size,
        }
        store.put_file(f"{prefix}/{folder}/{name}", path)
    doc = {
        "version": STATE_VERSION,
        "epoch": epoch,
        "objects": objects,
        "saved_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    store.put_bytes(_state_key(prefix), json.dumps(doc, indent=1, sort_keys=True).encode())
    for key in store.list(f"{prefix}/"):  # superseded folders: best effort
        rel = key[len(prefix) + 1 :]
        if rel != STATE_NAME and not rel.startswith(f"{folder}/"):
            try:
                store.delete(key)
            except StorageError as e:
                log.warning("stage state: could not delete superseded %s (%s)", key, e)
    log.debug("stage state: epoch %d saved to %s", epoch, store.describe(prefix))
    return doc


def _local_epoch(out_dir: Path) -> int:
    """Epoch of out_dir/last.pt (0 when absent)."""
    last = out_dir / "last.pt"
    if not last.is_file():
        return 0
    from cloudml.training.checkpoint import load_checkpoint  # torch only where a checkpoint exists

    try:
        return int(load_checkpoint(last)["state"]["epoch"])
    except (CloudMLError, KeyError, TypeError, ValueError) as e:
        log.warning("stage state: local %s is unusable (%s); the store's state wins", last, e)
        return 0


def restore_stage_state(store: Store, prefix: str, out_dir: str | Path) -> int:
    """Bring the stored state of a stage into out_dir; returns the epoch now there (0: fresh).

    A local last.pt at the same or a later epoch is kept (same pod, store behind). Every file is
    downloaded beside its destination, checked against state.json's sha256 and size, and only
    then renamed into place, last.pt last: a failure or a tampered object leaves out_dir as it was.
    """
    out_dir = Path(out_dir)
    prefix = prefix.strip("/")
    doc = read_state(store, prefix)
    local = _local_epoch(out_dir)
    if doc is None:
        log.info("stage state: none at %s; starting at epoch %d", store.describe(prefix), local)
        return local
    if local >= int(doc["epoch"]):
        log.info("stage state: local last.pt (epoch %d) is not behind the store", local)
        return local
    out_dir.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name in STATE_FILES:
            entry = doc["objects"].get(name)
            if entry is None:
                continue
            key = f"{prefix}/{entry['key']}"
            tmp = out_dir / f".{name}.restore.tmp"
            store.get_file(key, tmp)
            got = sha256_file(tmp)
            if got != entry["sha256"] or tmp.stat().st_size != entry["size"]:
                raise StorageError(
                    f"stage state {store.describe(key)}: sha256 {got} ({tmp.stat().st_size} "
                    f"bytes) does not match {STATE_NAME} ({entry['sha256']}, {entry['size']} "
                    "bytes); refusing a tampered or corrupted checkpoint"
                )
            staged.append((tmp, out_dir / name))
        for tmp, dest in staged:  # STATE_FILES order: last.pt is renamed last
            os.replace(tmp, dest)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for name in STATE_FILES:
            (out_dir / f".{name}.restore.tmp").unlink(missing_ok=True)
    log.info("stage state: restored epoch %d from %s", doc["epoch"], store.describe(prefix))
    return int(doc["epoch"])


def sync_on_epoch(
    store: Store,
    prefix: str,
    out_dir: str | Path,
    inner: Callable[[dict], None] | None = None,
    strict: bool = False,
) -> Callable[[dict], None]:
    """An on_epoch callback: save the stage state (training.loop.fit writes last.pt before calling it),
    then call `inner`. A store outage costs only the sync (one warning) unless `strict`."""

    def on_epoch(rec: dict) -> None:
        try:
            save_stage_state(store, prefix, out_dir)
        except CloudMLError as e:
            if strict:
                raise
            log.warning("stage state: epoch %s not saved to the store: %s", rec.get("epoch"), e)
        if inner is not None:
            inner(rec)

    return on_epoch
