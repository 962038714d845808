"""A client that stops reading a stream: the gateway stops reading the upstream too, instead of buffering for it."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.flood_upstream import flood_upstream_in_thread
from tests.support.processes import HOST, start_gateway

POLICY = """
version: 1
providers:
  flood: {{type: openai, base_url: "{base}", hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  flood: {{provider: flood, model: flood}}
aliases:
  flood: {{targets: [flood], strategy: priority}}
fallback:
  timeouts: {{connect: 2s, first_token: 20s, total: 120s}}
"""
MIB = 1024 * 1024
EVENTS = 32 * 1024  # of about 4 KiB each: 128 MiB in all
CONTENT_BYTES = 4000
BUFFERED = 48 * MIB  # what may be on its way while the client reads nothing: socket buffers in the kernel, mostly
RSS_MARGIN = 32 * MIB  # the gateway's own growth meanwhile: its write buffer, the allocator's slack
WAIT_S = 60.0


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match[1]) * 1024


def _stream_request(port: int) -> bytes:
    body = b'{"model": "flood", "stream": true, "messages": [{"role": "user", "content": "hello"}]}'
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (HOST.encode(), port, len(body), body)
    )


def _until_still(read: Callable[[], int], settle_s: float = 1.0) -> int:
    """Poll `read()` until it stops changing for `settle_s` (or WAIT_S passes); its last value."""
    deadline = time.monotonic() + WAIT_S
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= settle_s:
            break
    return last


def test_a_client_that_stops_reading_a_stream_holds_the_upstream_back_and_then_gets_every_event(
    tmp_path: Path,
) -> None:
    with flood_upstream_in_thread(EVENTS, CONTENT_BYTES) as upstream:
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY.format(base=upstream.base_url))
        gateway = start_gateway(policy)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
                sock.settimeout(WAIT_S)
                sock.connect((HOST, gateway.port))
                sock.sendall(_stream_request(gateway.port))
                head = sock.recv(4096)
                assert head.startswith(b"HTTP/1.1 200"), head[:200]
                before = peak_rss(gateway.process.pid)

                # The client reads nothing more: the upstream must come to a stop far short of the whole stream.
                sent = _until_still(lambda: upstream.sent)
                assert sent < BUFFERED, f"the upstream sent {sent / MIB:.0f} MiB to a client reading nothing"
                assert sent < upstream.total
                grown = peak_rss(gateway.process.pid) - before
                assert grown < RSS_MARGIN, f"the gateway grew by {grown / MIB:.0f} MiB for a client reading nothing"

                # Then it reads: every event arrives, in order, and the stream ends as OpenAI's does.
                parts = [head]
                while not parts[-1].endswith(b"0\r\n\r\n"):
                    data = sock.recv(1024 * 1024)
                    assert data, "the stream ended early"
                    parts.append(data)
            received = b"".join(parts)
            assert received.count(b'"content":"xxxx') == EVENTS
            assert received.count(b'"finish_reason":"stop"') == 1
            assert received.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")  # the last event, then the last chunk
            assert upstream.sent == upstream.total
        finally:
            gateway.stop()
        assert "Traceback" not in gateway.process.logs()
