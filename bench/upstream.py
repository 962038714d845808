"""A fast fake OpenAI-compatible upstream for the benchmark: raw asyncio (uvloop) HTTP/1.1 keep-alive, no framework.

`POST .../chat/completions` answers a JSON completion with usage, or (with `"stream": true`) an SSE stream of
`CHUNKS` content chunks (`LONG_CHUNKS` when `max_tokens` is at least that: the coding-agent stream), a finish chunk,
a usage chunk when `stream_options.include_usage` is true, and `data: [DONE]`. `POST .../messages` answers an
Anthropic Messages JSON reply. Everything else is a 404. It must be much faster than any gateway in front of it: the
`direct` scenario of the benchmark checks that.

With `--interval-ms N --tokens T` it is the slow upstream of the long-lived-streams run instead: every stream sends
one content chunk every N ms, T of them, as a model does; each connection then serves one request at a time.

Run: python -m bench.upstream --port 9000 [--host 127.0.0.1] [--interval-ms 50 --tokens 100]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import cast

import orjson

CHUNKS = 20
LONG_CHUNKS = 2000
PROMPT_TOKENS = 12
_MAX_HEADER = 64 * 1024
_NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 50\r\n\r\n"
    b'{"error":{"message":"not found","type":"invalid"}}'
)
_USAGE = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": CHUNKS, "total_tokens": PROMPT_TOKENS + CHUNKS}
_BAD = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def _completion(model: str) -> bytes:
    body = orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "word " * CHUNKS},
                    "finish_reason": "stop",
                }
            ],
            "usage": _USAGE,
        }
    )
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
    return head + body


def _chunk(data: bytes) -> bytes:
    event = b"data: " + data + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


_STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _stream_parts(model: str, include_usage: bool, chunks: int) -> tuple[bytes, bytes, bytes]:
    """(head and role chunk, one content chunk, the tail from the finish chunk to the end of the body)."""
    created = int(time.time())
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": created, "model": model}
    head = _STREAM_HEAD + _chunk(orjson.dumps({**base, "choices": [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}))
    word = _chunk(orjson.dumps({**base, "choices": [{"index": 0, "delta": {"content": "word "},
                                                      "finish_reason": None}]}))
    tail = [_chunk(orjson.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))]
    if include_usage:
        usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": chunks, "total_tokens": PROMPT_TOKENS + chunks}
        tail.append(_chunk(orjson.dumps({**base, "choices": [], "usage": usage})))
    tail.append(_chunk(b"[DONE]"))
    tail.append(b"0\r\n\r\n")
    return head, word, b"".join(tail)


def _stream(model: str, include_usage: bool, chunks: int = CHUNKS) -> bytes:
    head, word, tail = _stream_parts(model, include_usage, chunks)
    return head + word * chunks + tail


def _message(model: str) -> bytes:
    body = orjson.dumps(
        {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "word " * CHUNKS}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": CHUNKS},
        }
    )
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


class _Answers:
    """Responses are built once per (model, kind) and reused: the upstream spends almost nothing per request."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, bool, bool, int], bytes] = {}

    def get(self, kind: str, model: str, stream: bool, include_usage: bool, chunks: int) -> bytes:
        key = (kind, model, stream, include_usage, chunks)
        answer = self._cache.get(key)
        if answer is None:
            if kind == "messages":
                answer = _message(model)
            else:
                answer = _stream(model, include_usage, chunks) if stream else _completion(model)
            if len(self._cache) < 256:
                self._cache[key] = answer
        return answer


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive connection; requests may be pipelined."""

    def __init__(self, answers: _Answers, slow: tuple[float, int] | None = None) -> None:
        self._answers = answers
        self._slow = slow  # (seconds between chunks, chunks per stream)
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._dripping: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self._buf += data
        assert self._transport is not None
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > _MAX_HEADER:
                    self._transport.write(_BAD)
                    self._transport.close()
                return
            head = bytes(self._buf[:end])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or b"0")
                    break
            total = end + 4 + length
            if len(self._buf) < total:
                return
            body = bytes(self._buf[end + 4 : total])
            del self._buf[:total]
            self._answer(head, body)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._dripping is not None:
            self._dripping.cancel()

    def _answer(self, head: bytes, body: bytes) -> None:
        assert self._transport is not None
        request_line = head.split(b"\r\n", 1)[0]
        parts = request_line.split(b" ")
        path = parts[1].split(b"?")[0] if len(parts) > 1 else b""
        kind = "chat" if path.endswith(b"/chat/completions") else "messages" if path.endswith(b"/messages") else ""
        if parts[0] != b"POST" or not kind:
            self._transport.write(_NOT_FOUND)
            return
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        model = str(data.get("model") or "bench-model")
        stream = data.get("stream") is True and kind == "chat"
        options = data.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        max_tokens = data.get("max_tokens")
        chunks = LONG_CHUNKS if isinstance(max_tokens, int) and max_tokens >= LONG_CHUNKS else CHUNKS
        if stream and self._slow is not None:
            self._dripping = asyncio.get_running_loop().create_task(self._drip(model, include_usage))
            return
        self._transport.write(self._answers.get(kind, model, stream, include_usage, chunks))

    async def _drip(self, model: str, include_usage: bool) -> None:
        """A slow model: one content chunk every interval, from the moment the request arrived."""
        assert self._transport is not None and self._slow is not None
        interval, chunks = self._slow
        head, word, tail = _stream_parts(model, include_usage, chunks)
        self._transport.write(head)
        loop = asyncio.get_running_loop()
        began = loop.time()
        for i in range(1, chunks + 1):
            await asyncio.sleep(max(0.0, began + i * interval - loop.time()))  # no drift: gaps stay the interval
            if self._transport.is_closing():
                return
            self._transport.write(word)
        self._transport.write(tail)


async def serve(host: str, port: int, slow: tuple[float, int] | None = None) -> None:
    loop = asyncio.get_running_loop()
    answers = _Answers()
    server = await loop.create_server(
        lambda: UpstreamProtocol(answers, slow), host, port, backlog=4096, reuse_address=True
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interval-ms", type=float, help="slow streams: milliseconds between content chunks")
    parser.add_argument("--tokens", type=int, default=100, help="slow streams: content chunks per stream")
    args = parser.parse_args()
    slow = (args.interval_ms / 1000, args.tokens) if args.interval_ms else None
    try:
        import uvloop

        uvloop.run(serve(args.host, args.port, slow))
    except ImportError:
        asyncio.run(serve(args.host, args.port, slow))


if __name__ == "__main__":
    main()
