"""A stream whose upstream sends each event as its own HTTP chunk, many at a time (a fast model, a local engine):
the gateway relays what one read brings as one piece, not event by event, and loses or reorders nothing."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.canned_upstream import CannedUpstream, canned_upstream
from tests.support.processes import HOST, GatewayProcess, start_gateway

POLICY = """
version: 1
providers:
  engine: {{type: openai, base_url: {base}, hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  local: {{provider: engine, model: m, price: {{input_per_mtok: 0, output_per_mtok: 0}}}}
aliases:
  chat: {{targets: [local]}}
"""
TOKENS = 2000


def _chunked(event: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(event), event)


def _event(delta: dict[str, str], finish: str | None = None) -> bytes:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def _burst() -> bytes:
    """The whole stream in one write, each event its own HTTP chunk."""
    events = [_event({"role": "assistant", "content": ""})]
    events += [_event({"content": f"w{i} "}) for i in range(TOKENS)]
    events += [_event({}, "stop"), b"data: [DONE]\n\n"]
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
            b"connection: close\r\n\r\n")
    return head + b"".join(_chunked(e) for e in events) + b"0\r\n\r\n"


@pytest.fixture(scope="module")
def upstream() -> Iterator[CannedUpstream]:
    with canned_upstream() as canned:
        canned.answers["/v1/chat/completions"] = _burst()
        yield canned


@pytest.fixture(scope="module")
def gateway(upstream: CannedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    policy: Path = tmp_path_factory.mktemp("stream-reads") / "policy.yaml"
    policy.write_text(POLICY.format(base=upstream.base_url))
    with start_gateway(policy) as started:
        yield started


def _stream(gateway: GatewayProcess) -> list[bytes]:
    """The HTTP chunks of one streamed answer, as the client's socket receives them."""
    body = json.dumps({"model": "chat", "stream": True, "messages": [{"role": "user", "content": "go"}]}).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {HOST}\r\ncontent-type: application/json\r\n"
               f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body
    with socket.create_connection((HOST, gateway.port), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        while data := sock.recv(65536):
            received += data
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower(), head
    chunks = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return chunks
        chunks.append(rest[:size])
        rest = rest[size + 2 :]


def test_a_burst_of_events_is_relayed_whole_in_order_and_in_few_writes(gateway: GatewayProcess) -> None:
    chunks = _stream(gateway)
    events = [e for e in b"".join(chunks).split(b"\n\n") if e]
    contents = [json.loads(e[6:])["choices"][0]["delta"].get("content") for e in events if e != b"data: [DONE]"]
    assert contents[1 : TOKENS + 1] == [f"w{i} " for i in range(TOKENS)]
    assert events[-1] == b"data: [DONE]"
    # One piece per read of the upstream's socket (a few dozen for this burst), where it was one per event.
    assert len(chunks) < TOKENS / 10, len(chunks)


def test_the_official_client_reads_the_burst_whole(gateway: GatewayProcess) -> None:
    with openai.OpenAI(base_url=gateway.url("/v1"), api_key="any", max_retries=0, timeout=30) as client:
        stream = client.chat.completions.create(
            model="chat", stream=True, messages=[{"role": "user", "content": "go"}]
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "".join(f"w{i} " for i in range(TOKENS))
