"""A Messages or Responses request: read once, translated to Chat for routing, relayed or translated per attempt."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import Response

from gateway.api.parsing import ParsedRequest, json_object, read_request
from gateway.errors import BadRequestError, PolyrouteError
from gateway.policy.table import Deployment, Protocol, Timeouts
from gateway.protocols.adapters import ClientProtocol, TranslatedStream, translate_reply
from gateway.protocols.messages_request import fit_thinking
from gateway.providers.base import CountedStream, Endpoint, UpstreamCall, UpstreamReply, UpstreamStream

# Client headers that a native target needs to read the body as the client meant it.
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")


@dataclass(frozen=True)
class ProtocolRequest:
    """The body as the client sent it, its Chat translation (None with the reason when it has none)."""

    adapter: ClientProtocol
    body: dict[str, Any]
    chat: dict[str, Any] | None
    untranslatable: BadRequestError | None
    stream: bool
    headers: dict[str, str] = field(default_factory=dict)
    prompt_tokens: int = 0  # routing's estimate: the usage of a translated answer whose upstream reported none

    def call(self, deployment: Deployment, *, timeouts: Timeouts, request_id: str) -> UpstreamCall:
        """Relay the client's body to a target that speaks the protocol; send the translation to any other."""
        if _native(deployment, self.adapter.protocol):
            endpoint, body = self.adapter.endpoint, {**self.body, "model": deployment.model}
            headers = self.headers
        elif self.chat is None:
            assert self.untranslatable is not None
            raise self.untranslatable
        else:
            chat = self.chat
            if deployment.thinking is not None and self.adapter.protocol is Protocol.MESSAGES:
                chat = fit_thinking(chat, deployment.thinking, stream=self.stream)
            endpoint, body, headers = Endpoint.CHAT, {**chat, "model": deployment.model}, {}
            if self.stream:
                body["stream_options"] = {"include_usage": True}  # the translator reports usage itself
        return UpstreamCall(
            endpoint=endpoint,
            deployment=deployment,
            body=body,
            timeouts=timeouts,
            stream=self.stream,
            client_wants_usage=True,
            request_id=request_id,
            extra_headers=headers,
        )

    def refuse_unless_reachable(self, targets: Sequence[Deployment]) -> None:
        """A body with no Chat translation is refused before admission (it uses no rate-limit slot) when no target
        of its plan speaks its protocol natively."""
        if self.chat is None and not any(_native(d, self.adapter.protocol) for d in targets):
            assert self.untranslatable is not None
            raise self.untranslatable

    async def adapt(
        self, call: UpstreamCall, result: UpstreamReply | UpstreamStream
    ) -> UpstreamReply | UpstreamStream:
        """A relayed answer as it came; a translated one re-shaped for the client's protocol."""
        if call.endpoint is not Endpoint.CHAT:
            return result
        if isinstance(result, UpstreamReply):
            return translate_reply(self.adapter, result, self.body, self.prompt_tokens)
        translator = self.adapter.translator(self.body, self.adapter.new_id(), call.deployment.model)
        try:
            return TranslatedStream(result, translator, self.adapter, self.prompt_tokens)
        except BaseException:
            await result.aclose()
            raise

    def error_response(self, err: PolyrouteError, headers: dict[str, str]) -> Response:
        return protocol_error_response(self.adapter, err, headers, prompt_tokens=self.prompt_tokens)

    def stream_error(self, stream: UpstreamStream, err: PolyrouteError) -> bytes:
        """The protocol's own error event, ending a stream whose upstream failed after the first byte."""
        if isinstance(stream, TranslatedStream):
            return stream.fail(err)
        sent = stream.sent if isinstance(stream, CountedStream) else 0
        return self.adapter.native_error_event(err, sent)


def protocol_error_response(
    adapter: ClientProtocol, err: PolyrouteError, headers: dict[str, str], *, prompt_tokens: int = 0
) -> Response:
    """An error in the client protocol's own shape, with the status and headers an OpenAI-shaped one would have."""
    return Response(
        adapter.error_body(err, prompt_tokens),
        status_code=err.status,
        media_type="application/json",
        headers={**headers, **err.headers()},
    )


def parse_protocol_request(
    raw: bytes, adapter: ClientProtocol, headers: Headers
) -> tuple[ParsedRequest, ProtocolRequest]:
    """Routing reads the Chat translation, so rules, limits and capabilities see what any Chat request would.

    A body that cannot be translated may still be relayed to a target that speaks its protocol: routing then
    reads a rough stand-in (its size, its tools), and only an attempt on a Chat-only target gets the 400.
    """
    body = json_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequestError("You must provide a model parameter (a non-empty string).", param="model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool | None):
        raise BadRequestError("'stream' must be a boolean.", param="stream")
    try:
        chat: dict[str, Any] | None = adapter.to_chat(body)
        problem = None
    except BadRequestError as err:
        chat, problem = None, err
    routing = dict(chat) if chat is not None else _stand_in(raw, body)
    routing["model"] = model
    if stream:
        routing["stream"] = True
    parsed = read_request(routing, Endpoint.CHAT, headers)  # the translation as it is: no second decoding
    forwarded = {name: headers[name] for name in FORWARDED_HEADERS if name in headers}
    return parsed, ProtocolRequest(adapter, body, chat, problem, bool(stream), forwarded, parsed.prompt_tokens)


def _stand_in(raw: bytes, body: dict[str, Any]) -> dict[str, Any]:
    """What routing reads of a body with no Chat translation: its size as the prompt, its tools, its hints."""
    stand_in: dict[str, Any] = {"messages": [{"role": "user", "content": raw.decode("utf-8", "replace")}]}
    limit = body.get("max_tokens", body.get("max_output_tokens"))
    if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
        stand_in["max_tokens"] = limit
    if body.get("tools"):
        stand_in["tools"] = body["tools"]
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        hints = {key: metadata[key] for key in ("data_class", "tags") if key in metadata}
        if hints:
            stand_in["metadata"] = hints
    return stand_in


def _native(deployment: Deployment, protocol: Protocol) -> bool:
    provider = deployment.provider
    return provider.type == "openai" and provider.native_url(protocol) is not None
