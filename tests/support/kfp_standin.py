"""A loopback stand-in for the KFP v2beta1 REST API, recording every request.

It implements only what kfp.Client uses for submit/schedule: healthz, pipelines
(list with a display_name filter, upload, upload_version, list versions), experiments
(list with filter, create), runs (create), recurring runs (create, list, delete). State is
in memory; `requests` holds (method, path, query, body) with bodies parsed (JSON, or the
uploaded YAML text for multipart uploads). It is NOT a Kubeflow API server: it checks that
our client code sends the right requests, not that a server would run them. The HTTP
plumbing is tests/support/loopback.py.

    with KfpStandin() as kfp:
        os.environ["KFP_HOST"] = kfp.url
        ...
        kfp.find("POST", "/apis/v2beta1/runs")
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.support.loopback import LoopbackServer, Request

API = "/apis/v2beta1"
NOW = "2026-11-24T00:00:00Z"


def _filter_name(query: dict[str, list[str]]) -> str | None:
    """The display_name an EQUALS filter asks for, if any."""
    raw = query.get("filter", [""])[0]
    if not raw:
        return None
    for p in json.loads(raw).get("predicates", []):
        if p.get("key") == "display_name" and p.get("operation") in ("EQUALS", 1):
            return p.get("stringValue") or p.get("string_value")
    return None


def _multipart_file(content_type: str, body: bytes) -> str:
    """Text of the `uploadfile` part of a multipart/form-data body."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    for part in msg.iter_parts():
        if part.get_param("name", header="content-disposition") == "uploadfile":
            return part.get_payload(decode=True).decode()
    raise ValueError("no uploadfile part in the multipart body")


class KfpStandin(LoopbackServer):
    """In-memory KFP v2beta1 state behind a loopback server; `requests` records every call."""

    METHODS = ("GET", "POST", "DELETE")

    def __init__(self, token: str | None = None) -> None:
        super().__init__()
        self.token = token  # when set, requests without "Bearer <token>" get 401
        self.requests: list[tuple[str, str, dict[str, list[str]], Any]] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring: dict[str, dict] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def respond(self, request: Request) -> tuple[int, Any]:
        """Record the request (body parsed), check the token, then route it."""
        url = urlparse(request.path)
        query = parse_qs(url.query)
        ctype = request.headers.get("Content-Type", "")
        if request.body and ctype.startswith("multipart/form-data"):
            body: Any = _multipart_file(ctype, request.body)
        elif request.body:
            body = json.loads(request.body)
        else:
            body = None
        with self._lock:
            self.requests.append((request.method, url.path, query, body))
            if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
                return 401, {"error": "unauthenticated", "code": 16}
            return self._route(request.method, url.path, query, body)

    def find(self, method: str, path: str) -> list[tuple[str, str, dict, Any]]:
        """The recorded requests with this method and path, oldest first."""
        return [r for r in self.requests if r[0] == method and r[1] == path]

    def _id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    # --- routes ---
    def _route(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
        if not path.startswith(API):
            return 404, {"error": f"no route {path}"}
        p = path[len(API) :]
        one = lambda q: query.get(q, [None])[0]  # noqa: E731
        if method == "GET" and p == "/healthz":
            return 200, {"commit_sha": "standin", "tag_name": "2.5.0", "multi_user": False}
        if method == "GET" and p == "/pipelines":
            name = _filter_name(query)
            items = [
                x for x in self.pipelines.values() if name is None or x["display_name"] == name
            ]
            return 200, {"pipelines": items, "total_size": len(items)} if items else {}
        if method == "POST" and p == "/pipelines/upload":
            name = one("name")
            if any(x["display_name"] == name for x in self.pipelines.values()):
                return 409, {"error": f"pipeline {name} already exists", "code": 6}
            pid = self._id("pipeline")
            self.pipelines[pid] = {"pipeline_id": pid, "display_name": name,
                                   "description": one("description"), "created_at": NOW}  # fmt: skip
            self.versions[pid] = [self._version(pid, name, body)]
            return 200, self.pipelines[pid]
        if method == "POST" and p == "/pipelines/upload_version":
            pid = one("pipelineid")
            if pid not in self.versions:
                return 404, {"error": f"pipeline {pid} not found", "code": 5}
            v = self._version(pid, one("name"), body)
            self.versions[pid].insert(0, v)  # newest first
            return 200, v
        if method == "GET" and p.startswith("/pipelines/") and p.endswith("/versions"):
            pid = p.split("/")[2]
            vs = self.versions.get(pid, [])
            size = int(one("page_size") or 10)
            return 200, {"pipeline_versions": vs[:size], "total_size": len(vs)}
        if method == "GET" and p == "/experiments":
            name = _filter_name(query)
            items = [
                x for x in self.experiments.values() if name is None or x["display_name"] == name
            ]
            return 200, {"experiments": items, "total_size": len(items)} if items else {}
        if method == "POST" and p == "/experiments":
            eid = self._id("experiment")
            self.experiments[eid] = {**body, "experiment_id": eid, "created_at": NOW}
            return 200, self.experiments[eid]
        if method == "POST" and p == "/runs":
            rid = self._id("run")
            self.runs[rid] = {**body, "run_id": rid, "created_at": NOW, "state": "PENDING"}
            return 200, self.runs[rid]
        if method == "POST" and p == "/recurringruns":
            rid = self._id("recurring")
            self.recurring[rid] = {**body, "recurring_run_id": rid, "created_at": NOW}
            return 200, self.recurring[rid]
        if method == "GET" and p == "/recurringruns":
            name, eid = _filter_name(query), one("experiment_id")
            items = [
                x
                for x in self.recurring.values()
                if (name is None or x["display_name"] == name)
                and (eid is None or x.get("experiment_id") == eid)
            ]
            return 200, {"recurringRuns": items, "total_size": len(items)} if items else {}
        if method == "DELETE" and p.startswith("/recurringruns/"):
            rid = p.split("/")[2]
            if self.recurring.pop(rid, None) is None:
                return 404, {"error": f"recurring run {rid} not found", "code": 5}
            return 200, {}
        return 404, {"error": f"no route {method} {path}"}

    def _version(self, pid: str, name: str, spec_text: str) -> dict:
        vid = self._id("version")
        return {"pipeline_id": pid, "pipeline_version_id": vid, "display_name": name,
                "created_at": NOW, "spec_text": spec_text}  # fmt: skip
