"""Object storage: a local directory or an S3 bucket (MinIO), chosen by URI, with sha256 manifests.

    store = open_store()                      # $CLOUDML_STORE, default "artifacts" (a directory)
    store = open_store("s3://cloudml/data")   # $MINIO_ENDPOINT, $MINIO_ACCESS_KEY, ...
    manifest = upload_dir(store, "build/run", "runs/tuned/abc")   # manifest.json written LAST
    download_dir(store, "runs/tuned/abc", "restored")             # every object sha256-verified

Keys are "/"-separated and relative to the store's root (a directory, or bucket + prefix).
A prefix whose `manifest.json` exists is complete: multi-object sets are published by writing
the manifest after every object, and a single object is never visible half-written (S3 PUT is
atomic; the local backend renames a finished temp file).

Retries are ours and explicit: the minio client's urllib3 pool would otherwise retry 5 times
on connection errors and 500-504 with 5-minute timeouts (minio 7.2 defaults), so we hand it a
pool with retries off and short timeouts and retry transient errors here, bounded by attempts
and total time (`RetryPolicy`). Credentials never appear in messages, reprs or logs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cloudml.cluster.settings import MINIO_BUCKET
from cloudml.errors import StorageError
from cloudml.fileio import atomic_path, sha256_file

log = logging.getLogger(__name__)

DEFAULT_STORE = "artifacts"  # local directory used when CLOUDML_STORE is unset
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
# KFP's own artifacts (pipeline_root): an `s3://` root resolved through the kfp-launcher
# ConfigMap's `providers.s3` block (docs/storage-and-metrics.md). `minio://` would fall back to
# KFP's bundled object store when no `minio` provider is configured.
DEFAULT_PIPELINE_ROOT = f"s3://{MINIO_BUCKET}/pipeline-root"

# S3 error codes that mean "try again"; everything else in S3Error is final.
TRANSIENT_S3_CODES = frozenset(
    {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"}
)
AUTH_S3_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken"}
)

T = TypeVar("T")


# --- retry policy (pure) -----------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: at most `attempts` tries and `max_total_s` seconds."""

    attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    max_total_s: float = 60.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """CLOUDML_STORE_RETRIES / CLOUDML_STORE_RETRY_SECONDS override the defaults."""
        p = cls()
        try:
            attempts = int(os.environ.get("CLOUDML_STORE_RETRIES", p.attempts))
            total = float(os.environ.get("CLOUDML_STORE_RETRY_SECONDS", p.max_total_s))
        except ValueError as e:
            raise StorageError(
                f"CLOUDML_STORE_RETRIES / CLOUDML_STORE_RETRY_SECONDS must be numbers: {e}"
            ) from None
        return cls(attempts=max(1, attempts), max_total_s=total)


def backoff_delays(policy: RetryPolicy, jitter: Callable[[], float] = random.random) -> list[float]:
    """Sleep before each retry (len = attempts - 1): base * 2^i capped, with up to 25% jitter."""
    delays = []
    for i in range(policy.attempts - 1):
        d = min(policy.max_delay_s, policy.base_delay_s * 2**i)
        delays.append(d * (0.75 + 0.25 * jitter()))
    return delays


def is_transient(exc: BaseException) -> bool:
    """Connection refused/reset, timeouts, HTTP 5xx and SlowDown are worth retrying."""
    import urllib3.exceptions
    from minio.error import InvalidResponseError, S3Error, ServerError

    if isinstance(exc, urllib3.exceptions.SSLError):
        return False  # a TLS misconfiguration does not heal itself
    if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, S3Error):
        status = exc.response.status if exc.response is not None else 0
        return exc.code in TRANSIENT_S3_CODES or status >= 500
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, InvalidResponseError):
        return getattr(exc, "_code", 0) >= 500
    return False


def with_retries(
    op: Callable[[], T],
    what: str,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run `op`, retrying transient errors per `policy`; the last error propagates."""
    start = clock()
    delays = backoff_delays(policy)
    for attempt in range(policy.attempts):
        try:
            return op()
        except Exception as e:
            if not is_transient(e) or attempt == policy.attempts - 1:
                raise
            delay = delays[attempt]
            if clock() - start + delay > policy.max_total_s:
                raise
            log.warning(
                "%s: transient error (%s), retry %d/%d in %.1fs",
                what,
                type(e).__name__,
                attempt + 1,
                policy.attempts - 1,
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


# --- stores --------------------------------------------------------------------------------
class Store(Protocol):
    """What every backend offers. Keys are relative, '/'-separated, never start with '/'."""

    uri: str

    def put_file(self, key: str, path: str | Path) -> None: ...
    def get_file(self, key: str, path: str | Path) -> None: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def describe(self, key: str) -> str: ...


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"invalid object key {key!r}: expected a relative 'a/b/c' path")
    return key


def _is_tempname(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


class LocalStore:
    """A directory as an object store (the embedded default for local runs)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def __repr__(self) -> str:
        return f"LocalStore({self.uri!r})"

    def describe(self, key: str) -> str:
        return str(self.root / key)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_file(self, key: str, path: str | Path) -> None:
        with atomic_path(self._path(key)) as tmp:
            shutil.copyfile(path, tmp)

    def get_file(self, key: str, path: str | Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise StorageError(f"object not found: {src}")
        with atomic_path(path) as tmp:
            shutil.copyfile(src, tmp)

    def put_bytes(self, key: str, data: bytes) -> None:
        with atomic_path(self._path(key)) as tmp:
            tmp.write_bytes(data)

    def get_bytes(self, key: str) -> bytes:
        src = self._path(key)
        if not src.is_file():
            raise StorageError(f"object not found: {src}")
        return src.read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        # S3 semantics: a plain string prefix ("runs/tu" matches "runs/tuned/...")
        base = (
            self.root / prefix
            if prefix.endswith("/") or not prefix
            else (self.root / prefix).parent
        )
        if not base.is_dir():
            return []
        keys = []
        for p in base.rglob("*"):
            if p.is_file() and not _is_tempname(p.name):
                rel = p.relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    keys.append(rel)
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store:
    """A bucket (plus optional key prefix) on an S3 endpoint through the `minio` client."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        prefix: str = "",
        access_key: str | None = None,
        secret_key: str | None = None,
        secure: bool = False,
        region: str = "us-east-1",
        retry: RetryPolicy | None = None,
    ) -> None:
        import urllib3
        from minio import Minio

        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.secure = secure
        self.retry = retry or RetryPolicy.from_env()
        scheme = "https" if secure else "http"
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        _quiet_http_debug_logs()
        self._where = f"{scheme}://{endpoint}"
        # Our own pool: urllib3 retries off (we retry in with_retries), short timeouts.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(
                connect=self.retry.connect_timeout_s, read=self.retry.read_timeout_s
            ),
            retries=False,
            maxsize=10,
            cert_reqs="CERT_REQUIRED" if secure else "CERT_NONE",
        )
        try:
            self._client = Minio(
                endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=secure,
                region=region,
                http_client=http,
            )
        except ValueError as e:  # bad endpoint or bucket syntax; message has no secret
            raise StorageError(f"invalid S3 endpoint {endpoint!r} (MINIO_ENDPOINT): {e}") from None

    def __repr__(self) -> str:
        return f"S3Store({self._where}, {self.uri!r})"

    def describe(self, key: str) -> str:
        full = f"{self.prefix}/{key}" if self.prefix else key
        return f"s3://{self.bucket}/{full} at {self._where}"

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, op: Callable[[], T], what: str, key: str | None) -> T:
        """Run one S3 operation with retries; turn every failure into a StorageError."""
        import urllib3.exceptions
        from minio.error import MinioException, S3Error

        where = self.describe(key) if key is not None else f"s3://{self.bucket} at {self._where}"
        try:
            return with_retries(op, f"{what} {where}", self.retry)
        except S3Error as e:
            if e.code in AUTH_S3_CODES:
                raise StorageError(
                    f"{what} {where}: credentials refused ({e.code}); check "
                    "MINIO_ACCESS_KEY / MINIO_SECRET_KEY and the bucket policy"
                ) from None
            if e.code == "NoSuchBucket":
                raise StorageError(
                    f"{what} {where}: bucket {self.bucket!r} does not exist"
                ) from None
            if e.code in ("NoSuchKey", "NoSuchObject") and key is not None:
                raise self._missing_bucket_or_key(key) from None
            raise StorageError(f"{what} {where}: S3 error {e.code}: {e.message}") from None
        except MinioException as e:
            raise StorageError(f"{what} {where}: {type(e).__name__}: {e}") from None
        except Exception as e:
            if is_transient(e):
                raise StorageError(
                    f"{what} {where}: endpoint unreachable after retries (up to {self.retry.attempts} "
                    f"attempts / {self.retry.max_total_s:.0f}s; {type(e).__name__}); check MINIO_ENDPOINT "
                    "and MINIO_SECURE"
                ) from None
            if isinstance(e, urllib3.exceptions.HTTPError):  # TLS: not retried
                raise StorageError(
                    f"{what} {where}: {type(e).__name__}: {e}; check MINIO_SECURE and the "
                    "endpoint's certificate"
                ) from None
            raise

    def _missing_bucket_or_key(self, key: str) -> StorageError:
        """HEAD answers 404 for both a missing key and a missing bucket: tell them apart."""
        if not self._call(lambda: self._client.bucket_exists(self.bucket), "check bucket", None):
            return StorageError(f"{self.describe(key)}: bucket {self.bucket!r} does not exist")
        return StorageError(f"object not found: {self.describe(key)}")

    def ensure_bucket(self) -> None:
        """Create the bucket if missing (tests, `cloudml upload`); clusters pre-create it."""

        def op() -> None:
            if not self._client.bucket_exists(self.bucket):
                self._client.make_bucket(self.bucket)

        self._call(op, "create bucket", None)

    def put_file(self, key: str, path: str | Path) -> None:
        k = self._key(key)
        self._call(lambda: self._client.fput_object(self.bucket, k, str(path)), "upload", key)

    def get_file(self, key: str, path: str | Path) -> None:
        k = self._key(key)

        def op() -> None:
            resp = self._client.get_object(self.bucket, k)
            try:
                with open(tmp, "wb") as f:  # a retry starts the file over
                    for chunk in resp.stream(1 << 20):
                        f.write(chunk)
            finally:
                resp.close()
                resp.release_conn()

        with atomic_path(path) as tmp:
            self._call(op, "download", key)

    def put_bytes(self, key: str, data: bytes) -> None:
        k = self._key(key)
        self._call(
            lambda: self._client.put_object(self.bucket, k, io.BytesIO(data), len(data)),
            "upload",
            key,
        )

    def get_bytes(self, key: str) -> bytes:
        k = self._key(key)

        def op() -> bytes:
            resp = self._client.get_object(self.bucket, k)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return self._call(op, "download", key)

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        k = self._key(key)

        def op() -> bool:
            try:
                self._client.stat_object(self.bucket, k)
                return True
            except S3Error as e:
                if e.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                    return False
                raise

        return self._call(op, "stat", key)

    def list(self, prefix: str = "") -> list[str]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0

        def op() -> list[str]:
            objs = self._client.list_objects(self.bucket, prefix=full, recursive=True)
            return sorted(o.object_name[strip:] for o in objs if not o.is_dir)

        return self._call(op, "list", prefix or None)

    def delete(self, key: str) -> None:
        k = self._key(key)
        self._call(lambda: self._client.remove_object(self.bucket, k), "delete", key)


def _quiet_http_debug_logs() -> None:
    """urllib3/minio debug lines carry URLs and headers; keep them out of DEBUG runs."""
    for name in ("urllib3", "minio"):
        logging.getLogger(name).setLevel(logging.WARNING)


def open_store(uri: str | None = None, retry: RetryPolicy | None = None) -> Store:
    """`s3://bucket/prefix` -> S3Store from MINIO_* env; anything else -> LocalStore(path).

    uri None reads CLOUDML_STORE (default "artifacts").
    """
    uri = uri or os.environ.get("CLOUDML_STORE") or DEFAULT_STORE
    if uri.startswith(("s3://", "minio://")):
        rest = uri.split("://", 1)[1]
        bucket, _, prefix = rest.partition("/")
        if len(bucket) < 3:
            raise StorageError(f"store URI {uri!r}: bucket names need at least 3 characters")
        endpoint = os.environ.get("MINIO_ENDPOINT")
        if not endpoint:
            raise StorageError(f"store URI {uri!r} needs MINIO_ENDPOINT (host:port) to be set")
        secure_s = os.environ.get("MINIO_SECURE", "false").strip().lower()
        if secure_s not in ("true", "false", "1", "0", "yes", "no"):
            raise StorageError(f"MINIO_SECURE must be true or false, got {secure_s!r}")
        return S3Store(
            endpoint=endpoint,
            bucket=bucket,
            prefix=prefix,
            access_key=os.environ.get("MINIO_ACCESS_KEY") or None,
            secret_key=os.environ.get("MINIO_SECRET_KEY") or None,
            secure=secure_s in ("true", "1", "yes"),
            region=os.environ.get("MINIO_REGION", "us-east-1"),
            retry=retry,
        )
    if "://" in uri:
        raise StorageError(f"store URI {uri!r}: expected s3://bucket/prefix or a directory path")
    return LocalStore(uri)


# --- manifests -----------------------------------------------------------------------------
def manifest_key(prefix: str) -> str:
    return f"{prefix.strip('/')}/{MANIFEST_NAME}"


def build_manifest(files: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """{relative name: (sha256, size)} -> the manifest document (sorted, versioned)."""
    return {
        "version": MANIFEST_VERSION,
        "objects": {k: {"sha256": s, "size": n} for k, (s, n) in sorted(files.items())},
    }


def parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
        objects = doc["objects"]
        for name, entry in objects.items():
            _check_key(name)
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


# --- layout helpers ------------------------------------------------------------------------
def raw_prefix(flight: str) -> str:
    return f"raw/{flight}"


def run_prefix(pipeline: str, run_id: str) -> str:
    """Where a run's outputs go: runs/<pipeline>/<run id>."""
    _check_key(f"{pipeline}/{run_id}")
    return f"runs/{pipeline}/{run_id}"


def fetch_raw_flight(store: Store, flight: str, dest_dir: str | Path) -> Path:
    """Download and verify one raw flight into `dest_dir` (its files land directly there).

    The flight is looked up at `raw/<flight>/` (a store rooted at the bucket) and then at
    `<flight>/` (a store rooted at `s3://bucket/raw`, as the pipeline's raw_uri is). A local
    copy whose manifest and checksums already match is reused without downloading.
    """
    candidates = [raw_prefix(flight), flight]
    prefix = next((c for c in candidates if store.exists(manifest_key(c))), None)
    if prefix is None:
        tried = ", ".join(store.describe(manifest_key(c)) for c in candidates)
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


# --- CLI -----------------------------------------------------------------------------------
def _upload_cmd(args: argparse.Namespace) -> int:
    dest = args.dest
    if dest.startswith(("s3://", "minio://")):
        rest = dest.split("://", 1)[1]
        bucket, _, prefix = rest.partition("/")
        store = open_store(f"s3://{bucket}")
        if isinstance(store, S3Store):
            store.ensure_bucket()
    else:
        store, prefix = LocalStore(Path(dest).parent), Path(dest).name
    src = Path(args.src)
    subdirs = sorted(p for p in src.iterdir() if p.is_dir()) if args.per_dir else []
    if subdirs:
        for d in subdirs:
            upload_dir(store, d, f"{prefix}/{d.name}".strip("/"), progress=True)
    else:
        if not prefix.strip("/"):
            raise StorageError(f"--dest {dest!r}: give a prefix (e.g. s3://bucket/raw/30Oct24)")
        upload_dir(store, src, prefix, progress=True)
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upload",
        help="upload a directory to s3://bucket/prefix (or a path) with a sha256 manifest",
    )
    p.add_argument("--src", required=True, help="local directory")
    p.add_argument("--dest", required=True, help="s3://bucket/prefix or a directory path")
    p.add_argument(
        "--per-dir",
        action="store_true",
        help="one manifest per subdirectory of --src (a campaign: raw/<flight>/manifest.json)",
    )
    p.set_defaults(func=_upload_cmd)
