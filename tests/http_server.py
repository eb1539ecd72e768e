"""A local HTTP file server with Range support, an optional throttle and a request log (no internet in tests)."""

from __future__ import annotations

import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

LIES = ("replaced", "shifted", "shifted-quietly", "ignores-range", "other-bytes")
SHIFT = 512  # bytes a shifting server starts after the asked offset


class FileServer:
    """Serves files from a folder on 127.0.0.1; `bytes_per_second` throttles bodies (0: unthrottled).

    `lie` (one of LIES) makes it a server that cannot be trusted about the files `other` (a folder) has, e.g.
    replaced shards of the same layout, serving them instead of its own: "replaced" serves them to
    every request; "ignores-range" serves them whole (200) whatever the Range; "other-bytes" serves them to Range
    requests only (whole files stay right); "shifted" answers a Range request with bytes from SHIFT later (and
    says so in Content-Range), "shifted-quietly" the same bytes under the asked Content-Range."""

    def __init__(self, folder: Path, bytes_per_second: int = 0, content_type: str = "video/mp4",
                 authorization: str | None = None, token: str | None = None,
                 lie: str | None = None, other: Path | None = None):
        """`authorization` (an Authorization header's value) and `token` (a query's `token=`): each, when
        given, required of every request (else 401, saying nothing of what was expected)."""
        assert lie in (None, *LIES)
        self.folder, self.lie, self.other = Path(folder), lie, other
        self.authorization, self.token = authorization, token
        self.bytes_per_second = bytes_per_second
        self.content_type = content_type
        self.requests: list[dict] = []  # {"method", "path", "range"} per request
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # Headers and body are separate writes: without this, Nagle's algorithm and the client's
                # delayed ACK stall every response by ~40 ms (as in tests/hub_server.py).
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                server.requests.append({"method": self.command, "path": self.path,
                                        "range": self.headers.get("Range"),
                                        "authorization": self.headers.get("Authorization")})
                query = parse_qs(urlsplit(self.path).query)
                if (server.authorization and self.headers.get("Authorization") != server.authorization) or \
                        (server.token and query.get("token") != [server.token]):
                    self.send_error(401)
                    return
                name = self.path.lstrip("/").split("?")[0]
                path = server.folder / name
                lie = server.lie if server.other and (server.other / name).is_file() else None  # only about those
                spec = self.headers.get("Range") if lie != "ignores-range" else None
                if lie in ("replaced", "ignores-range") or (lie == "other-bytes" and spec):
                    path = server.other / name
                if not path.is_file():
                    self.send_error(404)
                    return
                size = path.stat().st_size
                start, end = 0, size - 1
                status = 200
                if spec and spec.startswith("bytes="):
                    first, _, last = spec[6:].split(",")[0].partition("-")
                    start = int(first) if first else max(0, size - int(last))
                    end = int(last) if first and last else size - 1
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                self.send_response(status)
                self.send_header("Content-Type", server.content_type)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(end - start + 1))
                said = start
                if status == 206 and lie in ("shifted", "shifted-quietly"):
                    start, end = start + SHIFT, min(end + SHIFT, size - 1)
                    said = start if lie == "shifted" else said
                if status == 206:
                    self.send_header("Content-Range", f"bytes {said}-{said + end - start}/{size}")
                self.end_headers()
                if not body:
                    return
                with open(path, "rb") as f:
                    f.seek(start)
                    remaining = end - start + 1
                    chunk = 16384
                    while remaining > 0:
                        block = f.read(min(chunk, remaining))
                        if not block:
                            break
                        try:
                            self.wfile.write(block)
                        except (BrokenPipeError, ConnectionResetError):
                            return
                        remaining -= len(block)
                        if server.bytes_per_second:
                            time.sleep(len(block) / server.bytes_per_second)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def body_requests(self) -> list[dict]:
        return [r for r in self.requests if r["method"] == "GET"]

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":  # manual use: python tests/http_server.py FOLDER
    import sys

    with FileServer(Path(sys.argv[1]), int(os.environ.get("BPS", "0"))) as s:
        print(s.url(""), flush=True)
        threading.Event().wait()
