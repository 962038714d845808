"""One adapter per client protocol besides Chat: its translation both ways, its stream events and its error shape."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.error_classes import ErrorClass
from gateway.errors import PolyrouteError, UpstreamError
from gateway.observability.accounting import estimated_usage, output_tokens_in_body, output_tokens_in_stream
from gateway.policy.table import Protocol as WireProtocol
from gateway.protocols import messages_reply, responses_reply
from gateway.protocols.messages_request import messages_to_chat
from gateway.protocols.responses_request import responses_to_chat
from gateway.providers.base import Endpoint, UpstreamReply, UpstreamStream, Usage
from gateway.providers.failures import stream_event


class StreamTranslator(Protocol):
    """Chat Completions stream chunks in, a client protocol's SSE events (wire bytes) out."""

    def start(self) -> list[bytes]: ...

    def feed(self, chunk: dict[str, Any]) -> list[bytes]: ...

    def finish(self, estimate: dict[str, Any] | None = None) -> list[bytes]:
        """The closing events; their usage is the upstream's, else `estimate` (a chat `usage`)."""
        ...

    def fail(self, message: str, code: str, estimate: dict[str, Any] | None = None) -> list[bytes]: ...


@dataclass(frozen=True)
class ClientProtocol:
    """What polyroute needs to serve one client protocol from a Chat target, or relay it to a native one."""

    protocol: WireProtocol
    endpoint: Endpoint  # the upstream endpoint of a native relay
    id_prefix: str
    to_chat: Callable[[dict[str, Any]], dict[str, Any]]
    reply: Callable[[dict[str, Any], dict[str, Any], str], dict[str, Any]]  # (chat reply, request, id)
    translator: Callable[[dict[str, Any], str, str], StreamTranslator]  # (request, id, model)
    error_body: Callable[[PolyrouteError, int], bytes]  # (error, polyroute's estimate of the prompt's tokens)
    fail_code: Callable[[PolyrouteError], str]  # the `code` a translator's fail() event carries
    native_error_event: Callable[[PolyrouteError, int], bytes]  # (error, events relayed so far)

    def new_id(self) -> str:
        return self.id_prefix + uuid.uuid4().hex


def _responses_error_event(err: PolyrouteError, sent: int) -> bytes:
    data = {"type": "error", "code": err.code or err.error_type, "message": err.message, "param": err.param,
            "sequence_number": sent}
    return b"event: error\ndata: " + orjson.dumps(data) + b"\n\n"


MESSAGES = ClientProtocol(
    protocol=WireProtocol.MESSAGES,
    endpoint=Endpoint.MESSAGES,
    id_prefix="msg_",
    to_chat=messages_to_chat,
    reply=lambda chat, request, id_: messages_reply.chat_to_message(chat, request=request, message_id=id_),
    translator=lambda request, id_, model: messages_reply.MessagesStreamTranslator(
        request=request, message_id=id_, model=model
    ),
    error_body=messages_reply.error_body,
    fail_code=messages_reply.error_type,
    native_error_event=lambda err, _sent: messages_reply.error_event(err),
)
RESPONSES = ClientProtocol(
    protocol=WireProtocol.RESPONSES,
    endpoint=Endpoint.RESPONSES,
    id_prefix="resp_",
    to_chat=responses_to_chat,
    reply=lambda chat, request, id_: responses_reply.chat_to_response(chat, request=request, response_id=id_),
    translator=lambda request, id_, model: responses_reply.ResponsesStreamTranslator(
        request=request, response_id=id_, model=model
    ),
    error_body=responses_reply.error_body,
    fail_code=lambda err: err.code or err.error_type,
    native_error_event=_responses_error_event,
)
CLIENT_PROTOCOLS = {Endpoint.MESSAGES: MESSAGES, Endpoint.RESPONSES: RESPONSES}


def chat_usage(usage: Usage) -> dict[str, Any]:
    """A Usage as a Chat Completions `usage` object, the shape the translators read."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def translate_reply(
    adapter: ClientProtocol, reply: UpstreamReply, request: dict[str, Any], prompt_tokens: int = 0
) -> UpstreamReply:
    """A Chat reply re-shaped for the client's protocol, with the upstream's usage, or else polyroute's estimate
    (`prompt_tokens`: routing's estimate of the prompt), which accounting then records too."""
    try:
        chat = orjson.loads(reply.body)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("upstream answered 200 with a body that is not JSON",
                            error_class=ErrorClass.SERVER_ERROR) from exc
    if not isinstance(chat, dict):
        raise UpstreamError("upstream answered 200 with a body that is not an object",
                            error_class=ErrorClass.SERVER_ERROR)
    usage = reply.usage
    if usage is None:
        usage = estimated_usage(prompt_tokens, output_tokens_in_body(reply.body))
        chat["usage"] = chat_usage(usage)
    body = adapter.reply(chat, request, adapter.new_id())
    return UpstreamReply(body=orjson.dumps(body), usage=usage)


class TranslatedStream:
    """A Chat stream relayed as the client's protocol's events; the upstream's usage chunk feeds the translator.

    When the upstream reports no usage (llama.cpp ignores `stream_options.include_usage`), the closing events
    carry polyroute's estimate, counted from the upstream's events as accounting counts a Chat stream's.
    """

    def __init__(
        self, inner: UpstreamStream, translator: StreamTranslator, adapter: ClientProtocol, prompt_tokens: int = 0
    ) -> None:
        self._inner = inner
        self._translator = translator
        self._adapter = adapter
        self._prompt_tokens = prompt_tokens
        self._events = 0  # upstream events read, [DONE] included
        self.first_event = b"".join(translator.start() + self._translate(inner.first_event))

    @property
    def usage(self) -> Usage:
        return self._inner.usage or estimated_usage(self._prompt_tokens, output_tokens_in_stream(self._events))

    async def events(self) -> AsyncIterator[bytes]:
        async for raw in self._inner.events():
            translated = self._translate(raw)
            if translated:
                yield b"".join(translated)

    def _translate(self, raw: bytes) -> list[bytes]:
        """Translate every event in `raw` (an upstream item may carry several, each ending in a blank line)."""
        out: list[bytes] = []
        for event in raw.split(b"\n\n"):
            lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
            if lines:
                out += self._translate_one(b"\n".join(lines))
        return out

    def _translate_one(self, payload: bytes) -> list[bytes]:
        self._events += 1
        if payload == b"[DONE]":
            return self._translator.finish(self._estimate())
        return self._translator.feed(stream_event(payload))

    def _estimate(self) -> dict[str, Any] | None:
        return None if self._inner.usage is not None else chat_usage(self.usage)

    def fail(self, err: PolyrouteError) -> bytes:
        return b"".join(self._translator.fail(err.message, self._adapter.fail_code(err), self._estimate()))

    async def aclose(self) -> None:
        await self._inner.aclose()
