"""A fast fake OpenAI-compatible upstream for the benchmark: raw asyncio (uvloop) HTTP/1.1 keep-alive, no framework.

`POST .../chat/completions` answers a JSON completion with usage, or (with `"stream": true`) an SSE stream of
`CHUNKS` content chunks, a finish chunk, a usage chunk when `stream_options.include_usage` is true, and
`data: [DONE]`. Everything else is a 404. It must be much faster than any gateway in front of it: the `direct`
scenario of the benchmark checks that.

Run: python -m bench.upstream --port 9000 [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import cast

import orjson

CHUNKS = 20
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


def _stream(model: str, include_usage: bool) -> bytes:
    created = int(time.time())
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": created, "model": model}
    parts = [b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"]
    parts.append(_chunk(orjson.dumps({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                            "finish_reason": None}]})))
    for _ in range(CHUNKS):
        parts.append(_chunk(orjson.dumps({**base, "choices": [{"index": 0, "delta": {"content": "word "},
                                                                "finish_reason": None}]})))
    parts.append(_chunk(orjson.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})))
    if include_usage:
        parts.append(_chunk(orjson.dumps({**base, "choices": [], "usage": _USAGE})))
    parts.append(_chunk(b"[DONE]"))
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)


class _Answers:
    """Responses are built once per (model, kind) and reused: the upstream spends almost nothing per request."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, bool, bool], bytes] = {}

    def get(self, model: str, stream: bool, include_usage: bool) -> bytes:
        key = (model, stream, include_usage)
        answer = self._cache.get(key)
        if answer is None:
            answer = _stream(model, include_usage) if stream else _completion(model)
            if len(self._cache) < 256:
                self._cache[key] = answer
        return answer


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive connection; requests may be pipelined."""

    def __init__(self, answers: _Answers) -> None:
        self._answers = answers
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

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
            self._transport.write(self._answer(head, body))

    def _answer(self, head: bytes, body: bytes) -> bytes:
        request_line = head.split(b"\r\n", 1)[0]
        parts = request_line.split(b" ")
        if len(parts) < 2 or parts[0] != b"POST" or not parts[1].split(b"?")[0].endswith(b"/chat/completions"):
            return _NOT_FOUND
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        model = str(data.get("model") or "bench-model")
        stream = data.get("stream") is True
        options = data.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return self._answers.get(model, stream, include_usage)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    answers = _Answers()
    server = await loop.create_server(lambda: UpstreamProtocol(answers), host, port, backlog=1024, reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(serve(args.host, args.port))
    except ImportError:
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
