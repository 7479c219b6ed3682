"""Serve the bare repositories under a directory over Git smart HTTP, read-only.

``git http-backend`` does the protocol work as a CGI program; a small threaded HTTP server
in this process runs it per request. Flux's go-git needs smart HTTP (it cannot read the
"dumb" protocol), and ``git clone`` works against it too. Pushes are refused.
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from api.testbed.cluster import log


def _git_http_backend() -> list[str]:
    git = shutil.which("git")
    if git is None:
        raise RuntimeError("git is not on PATH (the Git HTTP server runs 'git http-backend')")
    return [git, "http-backend"]


def _read_body(handler: http.server.BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        # git sends large POST bodies chunked (beyond http.postBuffer).
        chunks: list[bytes] = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


class _GitHandler(http.server.BaseHTTPRequestHandler):
    server: _GitServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: Flux polls often

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def _cgi(self) -> None:
        parts = urlsplit(self.path)
        if "git-receive-pack" in parts.path or "service=git-receive-pack" in parts.query:
            self._plain(403, b"this server is read-only\n")
            return
        body = _read_body(self) if self.command == "POST" else b""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server.repos_dir),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": parts.path,
            "QUERY_STRING": parts.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        proc = subprocess.run(
            _git_http_backend(), input=body, capture_output=True, env=env, check=False
        )
        head, sep, payload = proc.stdout.partition(b"\r\n\r\n")
        if not sep:
            head, sep, payload = proc.stdout.partition(b"\n\n")
        if not sep:
            self._plain(500, proc.stderr or b"git http-backend gave no headers\n")
            return
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _plain(self, status: int, text: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)


class _GitServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    repos_dir: Path


@dataclass
class GitHttpServer:
    """``<url>/<name>.git`` is the bare repository ``<repos_dir>/<name>.git``."""

    repos_dir: Path
    url: str
    _server: _GitServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @classmethod
    def start(cls, repos_dir: Path, *, port: int = 0) -> GitHttpServer:
        _git_http_backend()
        server = _GitServer(("127.0.0.1", port), _GitHandler)
        server.repos_dir = repos_dir.resolve()
        thread = threading.Thread(target=server.serve_forever, name="git-http", daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        log(f"serving Git repositories of {repos_dir} at {url}")
        return cls(repos_dir=server.repos_dir, url=url, _server=server, _thread=thread)

    def repo_url(self, name: str) -> str:
        """The clone URL of bare repository ``<name>.git``."""
        return f"{self.url}/{name.removesuffix('.git')}.git"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
