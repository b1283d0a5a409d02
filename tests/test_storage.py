"""Storage: local backend, retries (pure), and the S3 backend against a real SeaweedFS."""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import threading
from pathlib import Path

import pytest
import urllib3.exceptions

from cloudml.errors import StorageError
from cloudml.store import layout
from cloudml.store.backends import LocalStore, S3Store, open_store
from cloudml.store.manifest import download_dir, fetch_raw_flight, read_manifest, upload_dir
from cloudml.store.retry import RetryPolicy, backoff_delays, with_retries
from tests.support.servers import S3_ACCESS_KEY, S3_SECRET_KEY

FAST = RetryPolicy(attempts=3, base_delay_s=0.05, max_delay_s=0.1, max_total_s=2.0)


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"alpha\n",
        "sub/b.bin": bytes(range(256)) * 40,
        "sub/deeper/c.json": b'{"x": 1}',
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


class RecordingStore:
    """Wraps a store and records the order of writes."""

    def __init__(self, inner):
        self.inner = inner
        self.uri = inner.uri
        self.writes: list[str] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put_file(self, key, path):
        self.writes.append(key)
        self.inner.put_file(key, path)

    def put_bytes(self, key, data):
        self.writes.append(key)
        self.inner.put_bytes(key, data)


# --- local backend ---------------------------------------------------------------------------
def test_local_round_trip_manifest_written_last(tmp_path):
    src = tmp_path / "src"
    files = make_tree(src)
    store = RecordingStore(LocalStore(tmp_path / "store"))
    manifest = upload_dir(store, src, "runs/tuned/r1")

    assert store.writes[-1] == "runs/tuned/r1/manifest.json"
    assert sorted(store.writes[:-1]) == sorted(f"runs/tuned/r1/{k}" for k in files)
    assert set(manifest["objects"]) == set(files)
    for rel, data in files.items():
        entry = manifest["objects"][rel]
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}

    out = download_dir(store, "runs/tuned/r1", tmp_path / "out")
    assert out == manifest
    for rel, data in files.items():
        assert (tmp_path / "out" / rel).read_bytes() == data
    assert (
        store.list("runs/tu")
        == store.list("runs/tuned/")
        == sorted([f"runs/tuned/r1/{k}" for k in files] + ["runs/tuned/r1/manifest.json"])
    )


def test_local_corrupted_object_fails_and_leaves_nothing(tmp_path):
    src = tmp_path / "src"
    make_tree(src)
    store = LocalStore(tmp_path / "store")
    manifest = upload_dir(store, src, "p")
    (tmp_path / "store" / "p" / "sub" / "b.bin").write_bytes(b"tampered")

    with pytest.raises(StorageError) as e:
        download_dir(store, "p", tmp_path / "out")
    msg = str(e.value)
    assert "p/sub/b.bin" in msg
    assert manifest["objects"]["sub/b.bin"]["sha256"] in msg
    assert hashlib.sha256(b"tampered").hexdigest() in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "store"]  # no out/, no temp dir


def test_local_failed_download_keeps_existing_destination(tmp_path):
    store = LocalStore(tmp_path / "store")
    make_tree(tmp_path / "src")
    upload_dir(store, tmp_path / "src", "p")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("old")
    store.delete("p/a.txt")
    with pytest.raises(StorageError, match="a.txt"):
        download_dir(store, "p", tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_missing_manifest_means_incomplete(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes("half/a.txt", b"x")
    with pytest.raises(StorageError, match=r"half/manifest.json.*did not finish"):
        download_dir(store, "half", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_reupload_unpublishes_stale_manifest_first(tmp_path):
    store = RecordingStore(LocalStore(tmp_path / "store"))
    make_tree(tmp_path / "src")
    upload_dir(store, tmp_path / "src", "p")
    deleted = []
    store.delete = lambda key: (deleted.append((key, len(store.writes))), store.inner.delete(key))
    n_before = len(store.writes)
    upload_dir(store, tmp_path / "src", "p")
    assert deleted == [("p/manifest.json", n_before)]  # deleted before any new object


def test_invalid_keys_rejected(tmp_path):
    store = LocalStore(tmp_path)
    for bad in ("", "/abs", "a/../b", "a//b"):
        with pytest.raises(StorageError, match="invalid object key"):
            store.put_bytes(bad, b"x")


def test_fetch_raw_flight_both_layouts_and_reuse(tmp_path):
    make_tree(tmp_path / "src")
    bucket_root = LocalStore(tmp_path / "bucket")
    upload_dir(bucket_root, tmp_path / "src", "raw/30Oct24")
    dest = fetch_raw_flight(bucket_root, "30Oct24", tmp_path / "d1")
    assert (dest / "sub" / "b.bin").is_file()
    # A store rooted at .../raw (the pipeline's raw_uri) finds <flight>/ directly.
    raw_root = LocalStore(tmp_path / "bucket" / "raw")
    assert fetch_raw_flight(raw_root, "30Oct24", tmp_path / "d2") == tmp_path / "d2"
    # A verified local copy is reused: the store is not read again for objects.
    calls = []
    orig = raw_root.get_file
    raw_root.get_file = lambda k, p: (calls.append(k), orig(k, p))
    fetch_raw_flight(raw_root, "30Oct24", tmp_path / "d2")
    assert calls == []
    with pytest.raises(StorageError, match="raw flight '12Feb25' not found"):
        fetch_raw_flight(raw_root, "12Feb25", tmp_path / "d3")


def test_cli_upload_per_dir_campaign(tmp_path):
    from cloudml.cli import main

    for flight in ("30Oct24", "12Feb25"):
        make_tree(tmp_path / "campaign" / flight)
    rc = main(
        [
            "upload",
            "--src",
            str(tmp_path / "campaign"),
            "--dest",
            str(tmp_path / "b" / "raw"),
            "--per-dir",
        ]
    )
    assert rc == 0
    store = LocalStore(tmp_path / "b")
    for flight in ("30Oct24", "12Feb25"):
        assert set(read_manifest(store, f"raw/{flight}")["objects"]) == {
            "a.txt",
            "sub/b.bin",
            "sub/deeper/c.json",
        }


# --- retries (pure) ----------------------------------------------------------------------------
def test_backoff_is_exponential_and_capped():
    p = RetryPolicy(attempts=6, base_delay_s=0.5, max_delay_s=3.0)
    assert backoff_delays(p, jitter=lambda: 1.0) == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff_delays(p, jitter=lambda: 0.0) == [0.375, 0.75, 1.5, 2.25, 2.25]


def test_with_retries_retries_transient_then_succeeds():
    errors = [
        urllib3.exceptions.NewConnectionError(None, "refused"),
        urllib3.exceptions.ProtocolError("reset"),
    ]
    sleeps = []

    def op():
        if errors:
            raise errors.pop(0)
        return "ok"

    assert with_retries(op, "x", FAST, sleep=sleeps.append) == "ok"
    assert len(sleeps) == 2


def test_with_retries_is_bounded_by_attempts_and_time():
    calls = []

    def op():
        calls.append(1)
        raise urllib3.exceptions.ReadTimeoutError(None, "/", "timeout")

    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        with_retries(op, "x", RetryPolicy(attempts=4, base_delay_s=0.01), sleep=lambda s: None)
    assert len(calls) == 4

    now = [0.0]
    calls.clear()
    policy = RetryPolicy(attempts=100, base_delay_s=1.0, max_delay_s=1.0, max_total_s=3.5)

    def sleep(s):
        now[0] += s

    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        with_retries(op, "x", policy, sleep=sleep, clock=lambda: now[0])
    assert 3 <= len(calls) <= 5 and now[0] <= 3.5


def test_with_retries_does_not_retry_final_errors():
    calls = []

    def op():
        calls.append(1)
        raise ValueError("bug")

    with pytest.raises(ValueError):
        with_retries(op, "x", FAST, sleep=lambda s: None)
    assert calls == [1]


# --- open_store ----------------------------------------------------------------------------
def test_open_store_dispatch(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDML_STORE", str(tmp_path / "st"))
    assert isinstance(open_store(), LocalStore) and open_store().root == tmp_path / "st"
    monkeypatch.delenv("MINIO_ENDPOINT", raising=False)
    with pytest.raises(StorageError, match="MINIO_ENDPOINT"):
        open_store("s3://cloudml/x")
    with pytest.raises(StorageError, match="at least 3"):
        open_store("s3://ab/x")
    with pytest.raises(StorageError, match="expected s3://"):
        open_store("gs://bucket/x")
    monkeypatch.setenv("MINIO_ENDPOINT", "127.0.0.1:1")
    monkeypatch.setenv("MINIO_SECRET_KEY", S3_SECRET_KEY)
    monkeypatch.setenv("MINIO_ACCESS_KEY", S3_ACCESS_KEY)
    s3 = open_store("s3://cloudml/some/prefix")
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix) == ("cloudml", "some/prefix")
    assert S3_SECRET_KEY not in repr(s3) and S3_SECRET_KEY not in s3.describe("k")


def test_pipeline_root_names_the_platform_bucket():
    from cloudml.cluster.settings import MINIO_BUCKET

    assert layout.DEFAULT_PIPELINE_ROOT == f"s3://{MINIO_BUCKET}/pipeline-root"


def test_unreachable_endpoint_is_a_clear_error(tmp_path, monkeypatch):
    from tests.support.servers import free_port

    port = free_port()  # nothing listens here
    store = S3Store(
        f"127.0.0.1:{port}",
        "cloudml",
        access_key=S3_ACCESS_KEY,
        secret_key=S3_SECRET_KEY,
        retry=FAST,
    )
    with pytest.raises(StorageError) as e:
        store.put_bytes("k/x", b"1")
    msg = str(e.value)
    assert f"127.0.0.1:{port}" in msg and "s3://cloudml/k/x" in msg and "unreachable" in msg
    assert S3_SECRET_KEY not in msg


class _FlakyS3(http.server.BaseHTTPRequestHandler):
    """Answers PUT with 503 SlowDown `fail` times, then 200; counts every request."""

    fail = 2
    count = 0

    def do_PUT(self):
        type(self).count += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if type(self).count <= type(self).fail:
            body = (
                b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>slow</Message></Error>"
            )
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
        else:
            body = b""
            self.send_response(200)
            self.send_header("ETag", '"0"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("fail, ok", [(2, True), (5, False)])
def test_slowdown_is_retried_by_us_only(fail, ok):
    """One HTTP request per attempt: the minio client's own urllib3 retries are off."""
    handler = type("H", (_FlakyS3,), {"fail": fail, "count": 0})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        store = S3Store(
            f"127.0.0.1:{server.server_port}", "flaky", access_key="a", secret_key="b", retry=FAST
        )
        if ok:
            store.put_bytes("k/x", b"1")
        else:
            with pytest.raises(StorageError, match="SlowDown"):
                store.put_bytes("k/x", b"1")
        assert handler.count == (fail + 1 if ok else FAST.attempts)
    finally:
        server.shutdown()
        server.server_close()


# --- S3 against SeaweedFS ---------------------------------------------------------------------
def s3_store(srv, bucket: str, secret: str = S3_SECRET_KEY, policy: RetryPolicy = FAST) -> S3Store:
    st = S3Store(srv.endpoint, bucket, access_key=S3_ACCESS_KEY, secret_key=secret, retry=policy)
    return st


@pytest.mark.servers
def test_s3_round_trip(s3_server, s3_env, tmp_path):
    store = open_store("s3://t-roundtrip", retry=FAST)
    store.ensure_bucket()
    files = make_tree(tmp_path / "src")
    manifest = upload_dir(store, tmp_path / "src", "raw/30Oct24")
    assert store.list("raw/") == sorted(
        [f"raw/30Oct24/{k}" for k in files] + ["raw/30Oct24/manifest.json"]
    )
    assert store.exists("raw/30Oct24/a.txt") and not store.exists("raw/30Oct24/nope")
    assert download_dir(store, "raw/30Oct24", tmp_path / "out") == manifest
    for rel, data in files.items():
        assert (tmp_path / "out" / rel).read_bytes() == data
    # The pipeline's raw_uri form: a store rooted at s3://bucket/raw
    raw = open_store("s3://t-roundtrip/raw", retry=FAST)
    dest = fetch_raw_flight(raw, "30Oct24", tmp_path / "flight")
    assert (dest / "sub/deeper/c.json").read_bytes() == files["sub/deeper/c.json"]
    store.delete("raw/30Oct24/a.txt")
    assert not store.exists("raw/30Oct24/a.txt")


@pytest.mark.servers
def test_cli_upload_campaign_to_s3(s3_env, tmp_path):
    from cloudml.cli import main

    files = make_tree(tmp_path / "campaign" / "30Oct24")
    src, dest = str(tmp_path / "campaign"), "s3://t-cli/raw"
    assert main(["upload", "--src", src, "--dest", dest, "--per-dir"]) == 0
    raw = open_store("s3://t-cli/raw", retry=FAST)
    got = fetch_raw_flight(raw, "30Oct24", tmp_path / "flight")
    assert {
        str(p.relative_to(got)) for p in got.rglob("*") if p.name != "manifest.json" and p.is_file()
    } == set(files)


@pytest.mark.servers
def test_s3_wrong_credentials_refused_nothing_written(s3_server, tmp_path):
    good = s3_store(s3_server, "t-creds")
    good.ensure_bucket()
    bad = s3_store(s3_server, "t-creds", secret="wrong-secret-value")
    make_tree(tmp_path / "src")
    with pytest.raises(StorageError) as e:
        upload_dir(bad, tmp_path / "src", "p")
    msg = str(e.value)
    assert s3_server.endpoint in msg and "s3://t-creds/" in msg and "credentials refused" in msg
    assert "wrong-secret-value" not in msg and S3_SECRET_KEY not in msg
    assert good.list("") == []


@pytest.mark.servers
def test_s3_missing_bucket_and_key_messages(s3_server, tmp_path):
    store = s3_store(s3_server, "t-missing")
    store.ensure_bucket()
    with pytest.raises(
        StorageError, match=r"object not found: s3://t-missing/no/such\.key at http://127"
    ):
        store.get_bytes("no/such.key")
    nob = s3_store(s3_server, "t-never-created")
    with pytest.raises(StorageError, match=r"bucket 't-never-created' does not exist"):
        nob.get_bytes("a/b")
    with pytest.raises(StorageError, match=r"bucket 't-never-created' does not exist"):
        nob.get_file("a/b", tmp_path / "x")
    # (A PUT is not checked: SeaweedFS creates a missing bucket on PUT for an admin identity.)
    assert not (tmp_path / "x").exists()


@pytest.mark.servers
def test_s3_corrupted_object_checksum_error(s3_server, tmp_path):
    store = s3_store(s3_server, "t-corrupt")
    store.ensure_bucket()
    make_tree(tmp_path / "src")
    manifest = upload_dir(store, tmp_path / "src", "p")
    store.put_bytes("p/a.txt", b"flipped bits")
    with pytest.raises(StorageError) as e:
        download_dir(store, "p", tmp_path / "out")
    msg = str(e.value)
    assert "s3://t-corrupt/p/a.txt" in msg and manifest["objects"]["a.txt"]["sha256"] in msg
    assert hashlib.sha256(b"flipped bits").hexdigest() in msg
    assert not (tmp_path / "out").exists()


@pytest.mark.servers
def test_s3_server_stopped_mid_upload_retries_then_succeeds(s3_restartable, tmp_path, caplog):
    srv = s3_restartable
    caplog.set_level(logging.WARNING, logger="cloudml.store.retry")
    policy = RetryPolicy(attempts=12, base_delay_s=0.3, max_delay_s=2.0, max_total_s=40.0)
    store = s3_store(srv, "t-restart", policy=policy)
    store.ensure_bucket()
    files = make_tree(tmp_path / "src")
    inner_put = store.put_file
    restarter: list[threading.Thread] = []

    def put_file(key, path):
        inner_put(key, path)
        if not restarter:  # after the first object: stop the server, restart it shortly
            srv.stop()
            t = threading.Thread(target=srv.start)
            restarter.append(t)
            t.start()

    store.put_file = put_file
    manifest = upload_dir(store, tmp_path / "src", "p")
    restarter[0].join()
    retries = [r for r in caplog.records if "transient error" in r.getMessage()]
    assert retries, "the upload should have hit the stopped server and retried"
    assert set(manifest["objects"]) == set(files)
    download_dir(store, "p", tmp_path / "out")
    assert (tmp_path / "out" / "sub" / "b.bin").read_bytes() == files["sub/b.bin"]


@pytest.mark.servers
def test_s3_server_down_gives_clear_error_and_no_manifest(s3_restartable, tmp_path):
    srv = s3_restartable
    store = s3_store(srv, "t-down")
    store.ensure_bucket()
    make_tree(tmp_path / "src")
    inner_put = store.put_file
    state = {"n": 0}

    def put_file(key, path):
        state["n"] += 1
        if state["n"] == 2:
            srv.stop()
        inner_put(key, path)

    store.put_file = put_file
    with pytest.raises(StorageError) as e:
        upload_dir(store, tmp_path / "src", "p")
    assert "unreachable" in str(e.value) and srv.endpoint in str(e.value)
    srv.start()
    assert not store.exists("p/manifest.json")
    with pytest.raises(StorageError, match="did not finish"):
        download_dir(store, "p", tmp_path / "out")


@pytest.mark.servers
def test_secret_never_logged_or_written(s3_server, s3_env, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger().setLevel(logging.DEBUG)
    store = open_store("s3://t-secret", retry=FAST)
    store.ensure_bucket()
    make_tree(tmp_path / "src")
    upload_dir(store, tmp_path / "src", "p")
    download_dir(store, "p", tmp_path / "out")
    bad = s3_store(s3_server, "t-secret", secret=S3_SECRET_KEY + "x")
    with pytest.raises(StorageError):
        bad.get_bytes("p/a.txt")
    with pytest.raises(StorageError):
        store.get_bytes("p/missing")
    text = caplog.text + "".join(json.dumps(r.args, default=str) for r in caplog.records)
    assert S3_SECRET_KEY not in text
    for key in store.list(""):
        assert S3_SECRET_KEY.encode() not in store.get_bytes(key)


def test_tls_mismatch_is_not_retried(caplog):
    """MINIO_SECURE=true against a plain-HTTP endpoint: one attempt, a clear StorageError."""
    handler = type("H", (_FlakyS3,), {"fail": 0, "count": 0})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        store = S3Store(
            f"127.0.0.1:{server.server_port}",
            "tls",
            access_key="a",
            secret_key="b",
            secure=True,
            retry=FAST,
        )
        with pytest.raises(StorageError, match="MINIO_SECURE"):
            store.put_bytes("k/x", b"1")
        assert not [r for r in caplog.records if "transient error" in r.getMessage()]
    finally:
        server.shutdown()
        server.server_close()
