"""Slow and greedy clients, met with raw sockets: header and body timeouts, an early 413, the connection bound."""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.processes import HOST, GatewayProcess, Upstream, start_gateway, start_simulated

POLICY = """
version: 1
providers:
  vllm: {{type: openai, base_url: {vllm}, hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  qwen-local: {{provider: vllm, model: Qwen/Qwen3-32B, context_window: 1000000}}
aliases:
  local: {{targets: [qwen-local], strategy: priority}}
"""
HELLO = [{"role": "user", "content": "hello"}]
MAX_BODY = 1024 * 1024
SHORT = {  # every slow-client bound short, so that the tests see them strike
    "POLYROUTE_HEADER_TIMEOUT_SECONDS": "1",
    "POLYROUTE_BODY_TIMEOUT_SECONDS": "1",
    "POLYROUTE_MAX_BODY_BYTES": str(MAX_BODY),
}
MAX_CONNECTIONS = 4
WAIT_S = 15.0  # generous: what the tests wait for happens about 1 s after it is due


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with start_simulated("vllm", name="sim-vllm", chunks=10) as sim:
        yield sim


@pytest.fixture(scope="module")
def policy(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path: Path = tmp_path_factory.mktemp("slow-clients") / "policy.yaml"
    path.write_text(POLICY.format(vllm=upstream.base_url))
    return path


@pytest.fixture(scope="module")
def gateway(policy: Path) -> Iterator[GatewayProcess]:
    with start_gateway(policy, env=SHORT) as started:
        yield started


@pytest.fixture(scope="module")
def bounded(policy: Path) -> Iterator[GatewayProcess]:
    env = {"POLYROUTE_MAX_CONNECTIONS": str(MAX_CONNECTIONS), "POLYROUTE_HEADER_TIMEOUT_SECONDS": "5"}
    with start_gateway(policy, env=env) as started:
        yield started


@contextlib.contextmanager
def raw_connection(gw: GatewayProcess) -> Iterator[socket.socket]:
    with socket.create_connection((HOST, gw.port), timeout=WAIT_S) as sock:
        yield sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the gateway sends until it closes the connection (socket.timeout if it never does)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def status_and_body(answer: bytes) -> tuple[int, dict]:  # type: ignore[type-arg]
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def post_head(path: str, length: int, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\ncontent-type: application/json\r\n"
        f"content-length: {length}\r\n{extra}\r\n"
    ).encode()


def test_connections_that_send_half_a_request_line_get_408_and_are_closed(gateway: GatewayProcess) -> None:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(raw_connection(gateway)) for _ in range(100)]
        for sock in socks:
            sock.sendall(b"POST /v1/chat/compl")
        answers = [read_until_closed(sock) for sock in socks]
    for answer in answers:
        status, body = status_and_body(answer)
        assert status == 408 and body["error"]["code"] == "request_timeout"


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(gateway: GatewayProcess) -> None:
    with raw_connection(gateway) as sock:
        assert read_until_closed(sock) == b""


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_declared_length_over_the_limit_gets_413_before_the_body(gateway: GatewayProcess, path: str) -> None:
    with raw_connection(gateway) as sock:
        sock.sendall(post_head(path, 100_000_000) + b'{"model": ')
        answer = read_until_closed(sock)  # the rest never comes: closed once the body timeout passes
    status, body = status_and_body(answer)
    assert status == 413
    if path == "/v1/messages":
        assert body["type"] == "error" and "100000000" in body["error"]["message"]
    else:
        assert body["error"]["code"] == "request_too_large" and "100000000" in body["error"]["message"]


def test_a_client_that_sends_a_whole_oversized_body_still_reads_the_413(gateway: GatewayProcess) -> None:
    body = json.dumps({"model": "local", "messages": [{"role": "user", "content": "x" * (16 * MAX_BODY)}]}).encode()
    request = urllib.request.Request(gateway.url("/v1/chat/completions"), data=body, method="POST",
                                     headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=WAIT_S)
    with info.value as err:
        assert err.code == 413 and json.loads(err.read())["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_body_that_stalls_gets_408_and_is_closed(gateway: GatewayProcess, path: str) -> None:
    with raw_connection(gateway) as sock:
        sock.sendall(post_head(path, 100) + b'{"model": ')
        answer = read_until_closed(sock)
    status, body = status_and_body(answer)
    assert status == 408
    if path == "/v1/messages":
        assert body["type"] == "error" and "paused" in body["error"]["message"]
    else:
        assert body["error"]["code"] == "request_timeout"


def test_a_slow_but_steady_body_is_not_cut(gateway: GatewayProcess) -> None:
    body = json.dumps({"model": "local", "messages": HELLO}).encode()
    pieces = [body[i : i + 8] for i in range(0, len(body), 8)]
    with raw_connection(gateway) as sock:
        sock.sendall(post_head("/v1/chat/completions", len(body), "connection: close\r\n"))
        for piece in pieces:  # in all longer than the 1 s body timeout, but never a pause that long
            time.sleep(0.3)
            sock.sendall(piece)
        status, reply = status_and_body(read_until_closed(sock))
    assert len(pieces) * 0.3 > 2 * float(SHORT["POLYROUTE_BODY_TIMEOUT_SECONDS"])  # the body took in all longer
    assert status == 200 and reply["choices"][0]["message"]["content"]


@pytest.mark.parametrize("piece", [None, 1000, 70_000], ids=["at-once", "small-pieces", "large-pieces"])
def test_a_long_body_is_read_whole_however_it_arrives(gateway: GatewayProcess, piece: int | None) -> None:
    """A coding agent's body near the limit, sent at once (the socket splits it) or in pieces: the gateway puts it
    together in order (a piece out of place or lost would not parse) and answers it."""
    turns = [{"role": "user", "content": f"turn {i}: " + "x" * 9000} for i in range(100)]
    body = json.dumps({"model": "local", "messages": turns}).encode()
    assert MAX_BODY * 0.8 < len(body) < MAX_BODY
    with raw_connection(gateway) as sock:
        sock.sendall(post_head("/v1/chat/completions", len(body), "connection: close\r\n"))
        for start in range(0, len(body), piece or len(body)):
            sock.sendall(body[start : start + (piece or len(body))])
            if piece:
                time.sleep(0.001)
        status, reply = status_and_body(read_until_closed(sock))
    assert status == 200, reply
    assert reply["usage"]["prompt_tokens"] > 0 and reply["choices"][0]["message"]["content"]


def test_keep_alive_clients_and_a_stream_longer_than_the_timeouts_are_unaffected(
    gateway: GatewayProcess, upstream: Upstream
) -> None:
    with openai.OpenAI(base_url=gateway.url("/v1"), api_key="any", max_retries=0) as client:
        big = "y" * (MAX_BODY // 2)  # arrives in many reads
        for content in ("one", big, "three"):
            reply = client.chat.completions.create(model="local", messages=[{"role": "user", "content": content}])
            assert reply.choices[0].message.content
        upstream.inject([{"fault": "delay", "delay": 0.3, "count": 1}])  # 10 frames: about 3 s, past both timeouts
        chunks = list(client.chat.completions.create(model="local", messages=HELLO, stream=True))
        assert chunks and chunks[-1].choices and chunks[-1].choices[0].finish_reason == "stop"


def test_connections_beyond_the_bound_get_503_at_once(bounded: GatewayProcess) -> None:
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(raw_connection(bounded)) for _ in range(MAX_CONNECTIONS)]
        for sock in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # headers never finish: held until the header timeout
        extra = [stack.enter_context(raw_connection(bounded)) for _ in range(2)]
        for sock in extra:  # answered without sending anything
            status, body = status_and_body(read_until_closed(sock))
            assert status == 503 and body["error"]["code"] == "too_many_connections"
        client = stack.enter_context(openai.OpenAI(base_url=bounded.url("/v1"), api_key="any", max_retries=0))
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="local", messages=HELLO)
        assert info.value.status_code == 503 and info.value.code == "too_many_connections"
        assert info.value.response.headers["retry-after"] == "1"
        held_statuses = [status_and_body(read_until_closed(sock))[0] for sock in held]
    # The gateway may still count the start-up health check's connection as the first ones open.
    assert held_statuses.count(408) >= MAX_CONNECTIONS - 1
    assert held_statuses.count(408) + held_statuses.count(503) == MAX_CONNECTIONS
    deadline = time.monotonic() + WAIT_S
    while True:  # the held connections are gone: new ones are served again
        with raw_connection(bounded) as sock:
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\nconnection: close\r\n\r\n".encode())
            if read_until_closed(sock).startswith(b"HTTP/1.1 200"):
                break
        assert time.monotonic() < deadline, "no connection was served after the held ones closed"
        time.sleep(0.05)


def test_the_bounds_hold_in_every_worker_of_a_multi_worker_gateway(policy: Path) -> None:
    with start_gateway(policy, env=SHORT, workers=2) as workers:
        with contextlib.ExitStack() as stack:
            socks = [stack.enter_context(raw_connection(workers)) for _ in range(8)]  # spread over both workers
            for sock in socks:
                sock.sendall(b"POST /v1/chat/compl")
            assert {status_and_body(read_until_closed(sock))[0] for sock in socks} == {408}
        with raw_connection(workers) as sock:
            sock.sendall(post_head("/v1/chat/completions", 100_000_000))
            assert status_and_body(read_until_closed(sock))[0] == 413


def read_answer(sock: socket.socket, pending: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """One answer with a content-length: (head, body, what came after it)."""
    while b"\r\n\r\n" not in pending:
        pending += sock.recv(65536) or pytest.fail("closed before an answer")
    head, _, rest = pending.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
    while len(rest) < length:
        rest += sock.recv(65536) or pytest.fail("closed in the middle of an answer")
    return head, rest[:length], rest[length:]


def chat_request(request_id: str, extra: str = "") -> tuple[bytes, bytes]:
    body = json.dumps({"model": "local", "messages": HELLO}).encode()
    return post_head("/v1/chat/completions", len(body), f"x-request-id: {request_id}\r\n{extra}"), body


def test_pipelined_requests_are_answered_whole_and_in_order(gateway: GatewayProcess) -> None:
    # Each answer's head and body leave together; the next answer must never come between them or before them.
    with raw_connection(gateway) as sock:
        sock.sendall(b"".join(b"".join(chat_request(name)) for name in ("first", "second", "third")))
        pending = b""
        for name in ("first", "second", "third"):
            head, body, pending = read_answer(sock, pending)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert f"x-request-id: {name}".encode() in head
            assert json.loads(body)["choices"][0]["message"]["content"]
        assert pending == b""


def test_a_whole_answer_is_one_well_formed_http_answer_and_honours_connection_close(gateway: GatewayProcess) -> None:
    # A proxied answer is written whole, past uvicorn's `send`: its head must still be what `send` would write.
    with raw_connection(gateway) as sock:
        sock.sendall(b"".join(chat_request("kept")))
        head, body, pending = read_answer(sock)
        lines = head.split(b"\r\n")
        names = [line.split(b":")[0] for line in lines[1:]]
        assert lines[0] == b"HTTP/1.1 200 OK"
        assert names.count(b"content-length") == names.count(b"content-type") == names.count(b"date") == 1
        assert b"server" in names and b"connection" not in names and b"transfer-encoding" not in names
        assert json.loads(body)["object"] == "chat.completion" and pending == b""
        sock.sendall(b"".join(chat_request("closing", "connection: close\r\n")))  # the same connection, kept
        received = read_until_closed(sock)
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"x-request-id: closing" in head and b"\r\nconnection: close" in head
    assert json.loads(body)["object"] == "chat.completion"  # the whole body, then the gateway closed


def test_a_client_that_waits_for_100_continue_gets_it_before_sending_the_body(gateway: GatewayProcess) -> None:
    head, body = chat_request("continued", "expect: 100-continue\r\n")
    with raw_connection(gateway) as sock:
        sock.sendall(head)
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(65536) or pytest.fail("closed before 100 Continue")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer, reply, _ = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and json.loads(reply)["object"] == "chat.completion"


def test_an_answer_to_head_is_its_head_alone_and_the_next_answer_follows_it(gateway: GatewayProcess) -> None:
    # A HEAD answer has no body for its head to leave with: it must still go out, before the next answer.
    with raw_connection(gateway) as sock:
        sock.sendall(f"HEAD /healthz HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode() + b"".join(chat_request("after")))
        received = b""
        while received.count(b"\r\n\r\n") < 2:
            received += sock.recv(65536) or pytest.fail("closed before both answers")
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 405 ") and b"content-length: " in head
        answer, body, _ = read_answer(sock, rest)
    assert answer.startswith(b"HTTP/1.1 200 ") and b"x-request-id: after" in answer
    assert json.loads(body)["object"] == "chat.completion"
