"""Object-store backends: a local directory or an S3 bucket (MinIO), chosen by URI.

    store = open_store()                      # $CLOUDML_STORE, default "artifacts" (a directory)
    store = open_store("s3://cloudml/data")   # $MINIO_ENDPOINT, $MINIO_ACCESS_KEY, ...
    store.put_file("runs/tuned/abc/model.pt", "build/model.pt")

Keys are "/"-separated and relative to the store's root (store.layout). A single object is
never visible half-written: S3 PUT is atomic, and the local backend renames a finished temp
file. Multi-object sets with sha256 manifests are store.manifest's job; S3 retries are
store.retry's. Credentials never appear in messages, reprs or logs.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from cloudml.errors import StorageError
from cloudml.fileio import atomic_path
from cloudml.store.layout import DEFAULT_STORE, check_key, is_remote, split_remote
from cloudml.store.retry import RetryPolicy, is_transient, with_retries

log = logging.getLogger(__name__)

# S3 error codes that mean the credentials or the bucket policy refused the request.
AUTH_S3_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken"}
)

T = TypeVar("T")


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


def _is_tempname(name: str) -> bool:
    """atomic_path's temp files (".<name>.<random>.tmp") are not objects yet."""
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
        return self.root / check_key(key)

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
        check_key(key)
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
    if is_remote(uri):
        bucket, prefix = split_remote(uri)
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
