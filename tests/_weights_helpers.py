"""Helpers for tests/test_weights.py: weight files, checksums written out independently, and local servers.

Every server listens on 127.0.0.1 only: a plain file server (which can also cut a download short),
a fake Hugging Face Hub that real `huggingface_hub` calls can talk to, a port that refuses
connections and one that accepts them but never answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import torch


def blob_id(data: bytes) -> str:
    """git hash-object, written out independently of the code under test."""
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


def write_state_dict(path: Path, seed: int = 0) -> bytes:
    """A small state_dict file, different for each seed; returns its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    torch.save({"conv.weight": torch.randn(32, 32, generator=generator), "conv.bias": torch.zeros(32)}, path)
    return path.read_bytes()


class FileHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; under /short/ it promises the whole file but closes after half of it."""

    def do_GET(self) -> None:
        if not self.path.startswith("/short/"):
            super().do_GET()
            return
        data = Path(self.translate_path(self.path.removeprefix("/short"))).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


class FakeHubHandler(http.server.BaseHTTPRequestHandler):
    """Answers `/<owner>/<repo>/resolve/<revision>/<file>` as the Hub does: commit, ETag and size headers.

    `files` maps (revision, filename) to (commit, bytes); a revision may be a branch or a commit.
    """

    files: dict[tuple[str, str], tuple[str, bytes]] = {}

    def _answer_headers(self) -> bytes | None:
        match = re.fullmatch(r"/[^/]+/[^/]+/resolve/(?P<revision>[^/]+)/(?P<filename>.+)", self.path)
        found = self.files.get((match["revision"], match["filename"])) if match else None
        if found is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        commit, data = found
        self.send_response(200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        return data

    def do_HEAD(self) -> None:
        self._answer_headers()

    def do_GET(self) -> None:
        data = self._answer_headers()
        if data is not None:
            self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve(handler) -> Iterator[str]:
    """Run an HTTP server with `handler` on 127.0.0.1; yields its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def refusing_url() -> str:
    """A URL on 127.0.0.1 whose port refuses connections (nothing listens there)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A URL on 127.0.0.1 that accepts connections (the kernel's backlog) but never answers a request."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
