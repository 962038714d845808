"""A real headless Chromium loads a page from its own loopback origin; the page's script reports what it saw.

The page (served by `PageServer`, a plain http.server on another port, hence another origin) calls polyroute with
`fetch` and POSTs a JSON report back to its own origin, which needs no CORS. No driver, no DevTools client: the
browser is started with the page's URL and stopped once the report has arrived.
"""

from __future__ import annotations

import json
import queue
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

from tests.support.processes import HOST, ManagedProcess

REPORT_TIMEOUT_S = 60.0
MAX_REPORT_BYTES = 1 << 20
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-proxy-server",  # loopback only, whatever the environment says
)


def chromium_binary() -> str | None:
    return shutil.which("chromium")


class PageServer:
    """Serves one HTML page at `/` and takes the page's JSON report at `POST /report`."""

    def __init__(self, page: bytes) -> None:
        self._reports: queue.Queue[dict[str, Any]] = queue.Queue()
        reports = self._reports

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/":
                    self.send_error(404)
                    return
                self._answer(200, "text/html; charset=utf-8", page)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if self.path != "/report" or not 0 < length <= MAX_REPORT_BYTES:
                    self.send_error(400)
                    return
                reports.put(json.loads(self.rfile.read(length)))
                self._answer(204, "text/plain", b"")

            def _answer(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.send_header("cache-control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self.origin = f"http://{HOST}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="page-server", daemon=True)
        self._thread.start()

    def url(self, **query: str) -> str:
        return f"{self.origin}/?{urlencode(query)}"

    def wait_report(self, browser: ManagedProcess, timeout: float) -> dict[str, Any]:
        """The next report; raises with the browser's output if it exits or `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._reports.get(timeout=0.1)
            except queue.Empty:
                if not browser.running:
                    raise browser.fail(f"exited ({browser.popen.returncode}) before the page reported") from None
                if time.monotonic() > deadline:
                    raise browser.fail(f"the page did not report within {timeout:.0f}s") from None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def load_page(server: PageServer, url: str, profile: Path, *, timeout: float = REPORT_TIMEOUT_S) -> dict[str, Any]:
    """Open `url` in a fresh headless Chromium (profile in `profile`) and return the page's report."""
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError("chromium is not installed: run ./scripts/setup --test")
    browser = ManagedProcess([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url], label="chromium")
    try:
        return server.wait_report(browser, timeout)
    finally:
        browser.stop()
