"""Raw ASGI I/O for the model routes: the request body and responses sent as ASGI messages directly.

The model routes are plain ASGI apps rather than Starlette request/response endpoints: a Starlette
`StreamingResponse` runs a task group and a disconnect listener of its own for every stream, while the proxy already
watches the client itself (gateway.api.lifetime.Guard), and building `Request`/`Response` objects is work every
proxied request would pay for nothing.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send

from gateway.errors import ClientGoneError, RequestTooLargeError

RawHeaders = list[tuple[bytes, bytes]]


class RequestHeaders(Headers):
    """A request's headers, read once into a dict: each lookup is then one dict access, where Starlette's `Headers`
    encodes the name and scans the whole list on every `get` (a proxied request asks for half a dozen). As there,
    names match case-insensitively and the first of repeated headers wins; `getlist` and the rest are Starlette's."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope=scope)
        self._first = {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(self._list)}

    def get(self, key: str, default: Any = None) -> Any:
        return self._first.get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return self._first[key.lower()]

    def __contains__(self, key: Any) -> bool:
        return isinstance(key, str) and key.lower() in self._first


async def read_body(receive: Receive, headers: Headers, max_bytes: int) -> bytes:
    """The raw body, refusing (413) a declared length over the limit before reading any of it, and a body that
    grows past the limit as soon as it does.

    What the client still sends after the 413 is read and dropped by the server protocol, for a bounded time
    (gateway.api.server_protocol), so that a client sending its whole body first still reads the answer.
    """
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestTooLargeError(f"Request body is {declared} bytes; the limit is {max_bytes} bytes.")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGoneError()  # http.disconnect: the client left while sending
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > max_bytes:
                raise RequestTooLargeError(f"Request body is over {max_bytes} bytes; the limit is {max_bytes} bytes.")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def content_type(media_type: str) -> bytes:
    """The Content-Type Starlette would send for `media_type` (text types say their charset)."""
    if media_type.startswith("text/") and "charset=" not in media_type.lower():
        media_type += "; charset=utf-8"
    return media_type.encode("latin-1")


def response_start(status: int, media_type: bytes, headers: dict[str, str], length: int | None) -> Message:
    """The `http.response.start` message; `length` None for a body sent in chunks."""
    raw: RawHeaders = [(b"content-type", media_type)]
    if length is not None:
        raw.append((b"content-length", b"%d" % length))
    raw += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    return {"type": "http.response.start", "status": status, "headers": raw}


async def send_whole(send: Send, status: int, media_type: bytes, headers: dict[str, str], body: bytes) -> None:
    """A complete response in two messages."""
    await send(response_start(status, media_type, headers, len(body)))
    await send({"type": "http.response.body", "body": body, "more_body": False})


def body_chunk(data: bytes, *, more: bool = True) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}
