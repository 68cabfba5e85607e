"""A stand-in for the Hugging Face hub on 127.0.0.1, for ``scripts/get_models.py`` (``HF_ENDPOINT`` points at it).

It answers what ``huggingface_hub`` asks of ``/<repo>/resolve/<revision>/<path>``: ``HEAD`` with the hub's
headers (``X-Repo-Commit``; ``ETag`` the sha256 for large files, a git-style sha1 for small ones; ``Content-Length``)
and ``GET`` with ``Range: bytes=N-`` (206) for resuming. Files are served from disk in chunks. Two faults can be
planted: a file whose transfer stops after a number of bytes until :meth:`release` (to interrupt a download), a
file whose first ``GET`` sends other bytes of the right length (a wrong hash), and a file whose ``GET`` fails (500).
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CHUNK = 64 * 1024


def _etag(path: Path) -> str:
    if path.stat().st_size < 10 * 2**20:  # the hub gives small (git) files a sha1 etag, LFS files their sha256
        return hashlib.sha1(path.read_bytes()).hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 2**20):
            digest.update(chunk)
    return digest.hexdigest()


class StandInHub:
    """Serves ``files`` (``"<repo>/<path>"`` -> local file) at :attr:`endpoint` until :meth:`close`."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files
        self.etags = {key: _etag(path) for key, path in files.items()}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, key, Range header)
        self.hold: dict[str, int] = {}  # key -> stop sending after this many bytes until release()
        self.sent: dict[str, int] = {}
        self.corrupt_once: set[str] = set()
        self.refuse_get: set[str] = set()  # keys whose GET is answered 500 (the hub failing, not the network)
        self._released = threading.Event()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def do_GET(self) -> None:
                hub._answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()

    def _key(self, url_path: str) -> str | None:
        parts = url_path.split("?", 1)[0].strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return None
        return "/".join(parts[:2] + parts[4:])

    def _answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        key = self._key(h.path)
        self.requests.append((h.command, key or h.path, h.headers.get("Range")))
        path = self.files.get(key) if key else None
        if path is None:
            h.send_response(404)
            h.send_header("X-Error-Code", "EntryNotFound")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if body and key in self.refuse_get:
            h.send_response(500)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        size = path.stat().st_size
        start = 0
        rng = h.headers.get("Range")
        if body and rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-", 1)[0] or 0)
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", COMMIT)
        h.send_header("ETag", f'"{self.etags[key]}"')
        h.send_header("Content-Length", str(size - start))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        if body:
            self._send(h, key, path, start)

    def _send(self, h: BaseHTTPRequestHandler, key: str, path: Path, start: int) -> None:
        corrupt = key in self.corrupt_once
        self.corrupt_once.discard(key)
        hold = self.hold.pop(key, None)
        sent = start
        with open(path, "rb") as f:
            f.seek(start)
            while chunk := f.read(CHUNK):
                if hold is not None and sent + len(chunk) > hold:
                    self.sent[key] = sent
                    self._released.wait(120)
                    return  # the connection closes mid-file
                if corrupt:
                    chunk = bytes(b ^ 0xFF for b in chunk)
                try:
                    h.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    return
                sent += len(chunk)
        self.sent[key] = sent
