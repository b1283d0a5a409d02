"""Where things live in the artifact store, and what a store URI and an object key look like.

    raw/<flight>/...                          one raw flight + manifest.json (`cloudml upload`)
    runs/<pipeline>/<run id>/...              a run's outputs (+ manifest.json)
    runs/<pipeline>/<run id>/model/...        the gated model that promotion copies
    runs/<pipeline>/<run id>/<stage>/state/   a training stage's resume state (store.resume)
    models/<pipeline>/...                     versions, records, champion.json (store.promotion)

A store URI is either remote (`s3://bucket/prefix`; `minio://` is accepted as a synonym) or a
local directory path. Keys are "/"-separated and relative to the store's root (a directory, or
bucket + prefix). Everything here is pure: no I/O, no client imports.
"""

from __future__ import annotations

from cloudml.cluster.settings import MINIO_BUCKET
from cloudml.errors import StorageError

DEFAULT_STORE = "artifacts"  # local directory used when CLOUDML_STORE is unset
# KFP's own artifacts (pipeline_root): an `s3://` root resolved through the kfp-launcher
# ConfigMap's `providers.s3` block (docs/storage-and-metrics.md). `minio://` would fall back to
# KFP's bundled object store when no `minio` provider is configured.
DEFAULT_PIPELINE_ROOT = f"s3://{MINIO_BUCKET}/pipeline-root"

REMOTE_SCHEMES = ("s3://", "minio://")  # URIs served by the S3 backend


def is_remote(uri: str) -> bool:
    """True for an object-store URI (`s3://...`, `minio://...`), False for a local path."""
    return uri.startswith(REMOTE_SCHEMES)


def split_remote(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix"); the prefix may be empty."""
    bucket, _, prefix = uri.split("://", 1)[1].partition("/")
    return bucket, prefix


def check_key(key: str) -> str:
    """`key` itself when it is a relative 'a/b/c' object key; StorageError naming it otherwise."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"invalid object key {key!r}: expected a relative 'a/b/c' path")
    return key


def raw_prefix(flight: str) -> str:
    """Where one raw flight goes in a store rooted at the bucket: raw/<flight>."""
    return f"raw/{flight}"


def raw_flight_prefixes(flight: str) -> tuple[str, str]:
    """The prefixes a raw flight may live at, in lookup order: `raw/<flight>` (a store rooted
    at the bucket), then `<flight>` (a store rooted at `s3://bucket/raw`, as raw_uri is)."""
    return raw_prefix(flight), flight


def run_prefix(pipeline: str, run_id: str) -> str:
    """Where a run's outputs go: runs/<pipeline>/<run id>."""
    check_key(f"{pipeline}/{run_id}")
    return f"runs/{pipeline}/{run_id}"
