"""An upstream on loopback that answers every request with the exact bytes a test set for its path, then closes.

For answers no well-behaved simulator sends: a 200 whose body is an error object or an incomplete reply, a stream
that stops cleanly before its last event. Served by threads of the test's own process (`socketserver`).
"""

from __future__ import annotations

import re
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import orjson

HOST = "127.0.0.1"
_LENGTH = re.compile(rb"(?im)^content-length:\s*(\d+)")
_MISSING = b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"


def json_answer(body: object) -> bytes:
    """A 200 JSON answer carrying `body` (bytes as they are, anything else as JSON)."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
    return head % len(raw) + raw


def stream_answer(*events: bytes) -> bytes:
    """A 200 event stream of `events` (each a complete SSE event), ended by closing the connection cleanly."""
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n" + b"".join(events)


class CannedUpstream:
    """What to answer on each path (`answers`), and how many requests each path got."""

    def __init__(self, server: socketserver.ThreadingTCPServer) -> None:
        self._server = server
        self.port: int = server.server_address[1]
        self.answers: dict[str, bytes] = {}
        self.requests: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def answer(self, path: str) -> bytes:
        with self._lock:
            self.requests[path] = self.requests.get(path, 0) + 1
            return self.answers.get(path, _MISSING)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = self.rfile.readline(65536)
            if not line:
                return
            head += line
        length = _LENGTH.search(head)
        self.rfile.read(int(length[1]) if length else 0)
        path = head.split(b" ", 2)[1].decode()
        self.wfile.write(self.server.upstream.answer(path))


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    upstream: CannedUpstream


@contextmanager
def canned_upstream() -> Iterator[CannedUpstream]:
    with _Server((HOST, 0), _Handler) as server:
        server.upstream = CannedUpstream(server)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.upstream
        finally:
            server.shutdown()
            thread.join()
