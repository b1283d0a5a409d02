"""The HTTP plumbing shared by the loopback API stand-ins (kfp_standin, k8s_standin).

A `LoopbackServer` binds a ThreadingHTTPServer to 127.0.0.1 on a free port when it is built,
serves in a daemon thread inside `with`, and answers every request with the JSON body its
subclass's `respond` returns. Methods not in `METHODS` get http.server's own 501 reply, as
when a handler lacks the do_<METHOD> function.

    class Echo(LoopbackServer):
        def respond(self, request):
            return 200, {"path": request.path}

    with Echo() as srv:
        urllib.request.urlopen(srv.url + "/x")
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True)
class Request:
    """One request as the stand-in sees it: `path` includes the query string, `body` is raw."""

    method: str
    path: str
    headers: Message
    body: bytes


class LoopbackServer:
    """A JSON-answering HTTP server on 127.0.0.1:<free port>, run in a daemon thread."""

    METHODS: tuple[str, ...] = ("GET",)

    def __init__(self) -> None:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _reply(self, method: str) -> None:
                if method not in standin.METHODS:
                    self.send_error(HTTPStatus.NOT_IMPLEMENTED, f"Unsupported method ({method!r})")
                    return
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                status, payload = standin.respond(Request(method, self.path, self.headers, body))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self._reply("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._reply("POST")

            def do_DELETE(self) -> None:  # noqa: N802
                self._reply("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def respond(self, request: Request) -> tuple[int, Any]:
        """(HTTP status, JSON-serialisable body) for one request; subclasses implement it."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
