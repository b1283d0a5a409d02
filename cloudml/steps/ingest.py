"""ingest and fingerprint tasks: raw flight files (a directory or the store) -> shard."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from cloudml.errors import DataError, StorageError
from cloudml.fileio import write_json
from cloudml.steps.common import JSON_OPTIONS, config_from_json
from cloudml.store.layout import is_remote


def _local_raw_dir(raw_uri: str, flight: str, scratch: Path) -> Path:
    """A local directory holding raw/<flight>/ (downloaded from the store when remote)."""
    if is_remote(raw_uri):
        from cloudml.store.backends import open_store  # only remote runs need the S3 client
        from cloudml.store.manifest import fetch_raw_flight

        fetch_raw_flight(open_store(raw_uri), flight, scratch / flight)
        return scratch
    raw_dir = Path(raw_uri.removeprefix("file://"))
    if not (raw_dir / flight).is_dir():
        raise DataError(
            f"{raw_dir / flight}: raw flight directory does not exist (raw_uri={raw_uri})"
        )
    return raw_dir


def raw_data_source(raw_dir: Path, flight: str) -> str:
    """'synthetic campaign' when the generator's campaign.json beside the flights lists it."""
    marker = Path(raw_dir) / "campaign.json"
    if marker.is_file():
        meta = json.loads(marker.read_text())
        if flight in meta.get("flights", []):
            return f"synthetic campaign ({meta.get('generator', 'cloudml.data.synth')})"
    return "raw flight files (no synthetic-campaign marker)"


def raw_fingerprint(raw_uri: str, flight: str) -> str:
    """sha256 identifying the raw files of `flight` under raw_uri, cheap to compute.

    Remote: the sha256 of the flight's stored manifest (it lists every object's sha256), so
    nothing is downloaded. Local: sha256 over (file name, file sha256) of raw_uri/<flight>/.
    Feeding it to ingest makes KFP's cache key change exactly when the raw data changes.
    """

    from cloudml.fileio import sha256_file

    if is_remote(raw_uri):
        from cloudml.store.backends import open_store
        from cloudml.store.manifest import find_raw_flight, manifest_sha256

        store = open_store(raw_uri)
        prefix = find_raw_flight(store, flight)  # where fetch_raw_flight looks
        if prefix is None:
            raise StorageError(
                f"raw flight {flight!r}: no manifest under {raw_uri} (raw/{flight}/ or {flight}/)"
            )
        return manifest_sha256(store, prefix)
    flight_dir = Path(raw_uri.removeprefix("file://")) / flight
    files = sorted(p for p in flight_dir.iterdir() if p.is_file()) if flight_dir.is_dir() else []
    if not files:
        raise DataError(
            f"{flight_dir}: raw flight directory is missing or empty (raw_uri={raw_uri})"
        )
    h = hashlib.sha256()
    for path in files:
        h.update(f"{path.name}\0{sha256_file(path)}\n".encode())
    return h.hexdigest()


def run_ingest(
    raw_uri: str, flight: str, config_json: str, out_dir: Path, fingerprint: str = ""
) -> dict[str, Any]:
    """Ingest one flight into out_dir/<flight>.h5 plus its summary JSON; returns the summary.
    `fingerprint` (raw_fingerprint) is recorded in the summary; it is there for the cache key."""
    from cloudml.data.ingest import ingest_flight

    cfg = config_from_json(config_json)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"raw-{flight}-") as scratch:
        raw_dir = _local_raw_dir(raw_uri, flight, Path(scratch))
        summary = ingest_flight(raw_dir, flight, out_dir / f"{flight}.h5", cfg)
        summary["data_source"] = raw_data_source(raw_dir, flight)
        summary["raw_fingerprint"] = fingerprint
    write_json(out_dir / f"{flight}.summary.json", summary, **JSON_OPTIONS)
    return summary
