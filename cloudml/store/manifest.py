"""sha256 manifests: publish a directory under a store prefix, and fetch it back verified.

    manifest = upload_dir(store, "build/run", "runs/tuned/abc")   # manifest.json written LAST
    download_dir(store, "runs/tuned/abc", "restored")             # every object sha256-verified

A prefix whose `manifest.json` exists is complete: multi-object sets are published by writing
the manifest after every object. The manifest document is
{"version": 1, "objects": {relative name: {"sha256": ..., "size": ...}}}.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cloudml.errors import StorageError
from cloudml.fileio import sha256_file
from cloudml.store.backends import Store
from cloudml.store.layout import check_key, raw_flight_prefixes

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


def manifest_key(prefix: str) -> str:
    """The key of `prefix`'s manifest: <prefix>/manifest.json."""
    return f"{prefix.strip('/')}/{MANIFEST_NAME}"


def build_manifest(files: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """{relative name: (sha256, size)} -> the manifest document (sorted, versioned)."""
    return {
        "version": MANIFEST_VERSION,
        "objects": {k: {"sha256": s, "size": n} for k, (s, n) in sorted(files.items())},
    }


def parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    """The manifest document in `data`; StorageError naming `where` when it is malformed."""
    try:
        doc = json.loads(data)
        objects = doc["objects"]
        for name, entry in objects.items():
            check_key(name)
            if not isinstance(entry["sha256"], str) or not isinstance(entry["size"], int):
                raise TypeError(name)
    except (ValueError, KeyError, TypeError, AttributeError, StorageError) as e:
        raise StorageError(
            f"manifest {where} is malformed ({e!r}); expected "
            '{"version": 1, "objects": {name: {"sha256", "size"}}}'
        ) from None
    return doc


def read_manifest(store: Store, prefix: str) -> dict[str, Any]:
    """The manifest of a complete prefix; StorageError if the prefix is incomplete/missing."""
    key = manifest_key(prefix)
    if not store.exists(key):
        raise StorageError(
            f"no {MANIFEST_NAME} at {store.describe(key)}: the prefix is missing or its upload "
            "did not finish"
        )
    return parse_manifest(store.get_bytes(key), store.describe(key))


def _local_files(local_dir: Path) -> list[Path]:
    """Every file under local_dir, sorted, except a top-level manifest.json."""
    top_manifest = local_dir / MANIFEST_NAME  # a downloaded copy's own manifest is not data
    return sorted(p for p in local_dir.rglob("*") if p.is_file() and p != top_manifest)


def upload_dir(
    store: Store, local_dir: str | Path, prefix: str, progress: bool = False
) -> dict[str, Any]:
    """Upload every file under `local_dir` to `<prefix>/...`, then `<prefix>/manifest.json`.

    The manifest goes LAST, so a reader that finds it knows every listed object is in place.
    Re-running after a failure re-uploads and then publishes the manifest.
    """
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise StorageError(f"upload source {local_dir} is not a directory")
    prefix = prefix.strip("/")
    files = _local_files(local_dir)
    entries: dict[str, tuple[str, int]] = {}
    # Unpublish first: a stale manifest must never vouch for objects being replaced.
    if store.exists(manifest_key(prefix)):
        store.delete(manifest_key(prefix))
    from tqdm import tqdm

    for path in tqdm(files, desc=f"upload {prefix}", unit="file", disable=not progress):
        rel = path.relative_to(local_dir).as_posix()
        entries[rel] = (sha256_file(path), path.stat().st_size)
        store.put_file(f"{prefix}/{rel}", path)
    manifest = build_manifest(entries)
    store.put_bytes(manifest_key(prefix), json.dumps(manifest, indent=1).encode())
    log.info("uploaded %d files to %s", len(entries), store.describe(prefix))
    return manifest


def verify_file(path: Path, entry: dict[str, Any], where: str) -> None:
    """Raise StorageError naming the object and both hashes when `path` does not match."""
    got = sha256_file(path)
    if got != entry["sha256"] or path.stat().st_size != entry["size"]:
        raise StorageError(
            f"checksum mismatch for {where}: manifest sha256 {entry['sha256']} "
            f"({entry['size']} bytes), downloaded sha256 {got} ({path.stat().st_size} bytes)"
        )


def download_dir(
    store: Store, prefix: str, local_dir: str | Path, progress: bool = False
) -> dict[str, Any]:
    """Download a complete prefix into `local_dir`, verifying every object against its manifest.

    Files land in a temporary sibling directory that is renamed onto `local_dir` only when all
    are verified: a failure leaves nothing behind (and an existing `local_dir` untouched).
    """
    prefix = prefix.strip("/")
    local_dir = Path(local_dir)
    manifest = read_manifest(store, prefix)
    local_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{local_dir.name}.", suffix=".tmp", dir=local_dir.parent))
    try:
        from tqdm import tqdm

        items = manifest["objects"].items()
        for rel, entry in tqdm(items, desc=f"download {prefix}", unit="file", disable=not progress):
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            key = f"{prefix}/{rel}"
            store.get_file(key, dest)
            verify_file(dest, entry, store.describe(key))
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
        if local_dir.exists():
            shutil.rmtree(local_dir)
        os.replace(tmp, local_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def manifest_sha256(store: Store, prefix: str) -> str:
    """sha256 of the stored manifest bytes: one hash that pins a whole prefix."""
    key = manifest_key(prefix)
    if not store.exists(key):
        raise StorageError(f"no {MANIFEST_NAME} at {store.describe(key)}")
    return hashlib.sha256(store.get_bytes(key)).hexdigest()


def find_raw_flight(store: Store, flight: str) -> str | None:
    """The first of layout.raw_flight_prefixes holding a manifest; None when neither does."""
    candidates = raw_flight_prefixes(flight)
    return next((c for c in candidates if store.exists(manifest_key(c))), None)


def fetch_raw_flight(store: Store, flight: str, dest_dir: str | Path) -> Path:
    """Download and verify one raw flight into `dest_dir` (its files land directly there).

    The flight is looked up as `find_raw_flight` does. A local copy whose manifest and
    checksums already match is reused without downloading.
    """
    prefix = find_raw_flight(store, flight)
    if prefix is None:
        tried = ", ".join(store.describe(manifest_key(c)) for c in raw_flight_prefixes(flight))
        raise StorageError(f"raw flight {flight!r} not found in the store (tried {tried})")
    dest = Path(dest_dir)
    local_manifest = dest / MANIFEST_NAME
    if local_manifest.is_file():
        stored = read_manifest(store, prefix)
        if json.loads(local_manifest.read_text()) == stored:
            with contextlib.suppress(StorageError, OSError):
                for rel, entry in stored["objects"].items():
                    verify_file(dest / rel, entry, str(dest / rel))
                log.info("raw flight %s: verified local copy at %s", flight, dest)
                return dest
    download_dir(store, prefix, dest, progress=True)
    return dest
