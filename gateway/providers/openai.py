"""The fast path: any OpenAI-compatible upstream (Model Studio, vLLM, SGLang, Ollama, llama.cpp), bytes relayed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import orjson

from gateway.error_classes import ErrorClass
from gateway.errors import UpstreamError
from gateway.policy.table import Protocol, Provider
from gateway.providers.audio_relay import AudioRelay, multipart, transcription_reply
from gateway.providers.base import Endpoint, UpstreamCall, UpstreamReply, Usage
from gateway.providers.complete_reply import incomplete_reply
from gateway.providers.failures import TRANSPORT_ERRORS, transport_failure, upstream_error
from gateway.providers.http1 import HeaderBlock, HTTPClient
from gateway.providers.http1_response import Response, UpstreamLimits
from gateway.providers.images import IMAGE_ENDPOINTS, image_usage
from gateway.providers.multipart import encode_form
from gateway.providers.native_sse import NativeSSERelay, native_usage
from gateway.providers.sse_relay import SSERelay
from gateway.providers.upstream_proxy import UpstreamProxy

PATHS = {
    Endpoint.CHAT: "/chat/completions",
    Endpoint.COMPLETION: "/completions",
    Endpoint.EMBEDDING: "/embeddings",
    Endpoint.TRANSCRIPTION: "/audio/transcriptions",
    Endpoint.SPEECH: "/audio/speech",
    Endpoint.IMAGE: "/images/generations",
    Endpoint.IMAGE_EDIT: "/images/edits",
}
NATIVE = {Endpoint.RESPONSES: Protocol.RESPONSES, Endpoint.MESSAGES: Protocol.MESSAGES}
ANTHROPIC_VERSION = "2023-06-01"  # sent when the client named none
KEEPALIVE_S = 60.0  # an idle upstream connection is kept this long (or until the upstream closes it)


class OpenAICompatibleProvider:
    """Relays the request body and the upstream's bytes; parses only what accounting and failover need."""

    def __init__(
        self,
        provider: Provider,
        *,
        proxies: Mapping[str, UpstreamProxy] | None = None,
        limits: UpstreamLimits | None = None,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        """`on_wait(seconds)`: told how long each request beyond `max_connections` waited for a connection."""
        self.name = provider.name
        self._base = (provider.base_url or "").rstrip("/")
        headers = {"content-type": "application/json", "accept": "application/json"}
        headers.update(dict(provider.headers))
        if provider.api_key:
            headers["authorization"] = f"Bearer {provider.api_key}"
        self._headers = headers
        self._stream_headers = {**headers, "accept": "text/event-stream"}
        self._blocks = {False: HeaderBlock(self._headers), True: HeaderBlock(self._stream_headers)}
        # Audio: an upload's content type names its boundary; a speech answer is audio, not JSON or events.
        self._upload_block = HeaderBlock({k: v for k, v in headers.items() if k != "content-type"})
        self._speech_block = HeaderBlock({**headers, "accept": "*/*"})
        self._native_urls = {protocol: url for protocol, url in provider.native_urls}
        # Anthropic-style servers read the key from x-api-key; Model Studio, vLLM and Ollama accept either header.
        self._anthropic_headers = {"anthropic-version": ANTHROPIC_VERSION}
        if provider.api_key:
            self._anthropic_headers["x-api-key"] = provider.api_key
        # A header the client passes on (anthropic-version, anthropic-beta) never replaces one polyroute or the policy
        # sets: credentials, content type, the request id and the provider's configured `headers`.
        self._own_names = frozenset({*(name.lower() for name in headers), "authorization", "x-api-key", "x-request-id"})
        self._http = HTTPClient(
            max_connections=provider.max_connections, keepalive_s=KEEPALIVE_S, proxies=proxies,
            limits=limits or UpstreamLimits(), on_wait=on_wait,
        )

    async def close(self) -> None:
        await self._http.close()

    def _request(self, call: UpstreamCall, stream: bool) -> Awaitable[Response]:
        protocol = NATIVE.get(call.endpoint)
        payload: bytes | None = None  # None: the JSON body
        if protocol is not None:
            headers = {**(self._stream_headers if stream else self._headers)}
            if call.request_id:
                headers["x-request-id"] = call.request_id
            if protocol is Protocol.MESSAGES:
                headers.update(self._anthropic_headers)
            headers.update((k, v) for k, v in call.extra_headers.items() if k.lower() not in self._own_names)
            headers.update(call.trace_headers)
            block = HeaderBlock(headers)
            url = self._native_urls.get(protocol)
            if url is None:
                raise UpstreamError(f"provider {self.name} does not speak {protocol.value}",
                                    error_class=ErrorClass.NOT_FOUND)
        else:
            block = self._blocks[stream]
            if call.upload is not None:
                payload, upload_type = multipart(call.body, call.upload)
                block = self._upload_block.plus("content-type", upload_type)
            elif call.endpoint is Endpoint.SPEECH:
                block = self._speech_block
            if call.request_id:  # always one of ours, or the client's when it matched a safe pattern
                block = block.plus("x-request-id", call.request_id)
            for name, value in call.trace_headers:  # empty unless tracing is on
                block = block.plus(name, value)
            url = self._base + PATHS[call.endpoint]
        timeouts = call.timeouts
        if call.endpoint is Endpoint.IMAGE_EDIT:  # relayed as it came: multipart, the files as they were sent
            body = call.body
            files = {"image": body["image"], **({"mask": [body["mask"]]} if body.get("mask") else {})}
            payload, content_type = encode_form(body, files)
            headers = {**self._headers, "content-type": content_type}
            if call.request_id:
                headers["x-request-id"] = call.request_id
            headers.update(call.trace_headers)
            block = HeaderBlock(headers)
        return self._http.post(
            url, orjson.dumps(call.body) if payload is None else payload, block,
            connect_timeout_s=timeouts.connect_s, total_timeout_s=timeouts.total_s,
        )

    async def send(self, call: UpstreamCall) -> UpstreamReply:
        deployment = call.deployment.name
        try:
            resp = await self._request(call, False)
            try:
                body = await resp.read()
            finally:
                resp.release()
        except TRANSPORT_ERRORS as exc:
            timed_out = f"no complete answer within the total timeout of {call.timeouts.total_s:g}s"
            raise transport_failure(exc, timed_out=timed_out, connect_s=call.timeouts.connect_s) from exc
        if resp.status >= 400:
            raise upstream_error(resp.status, body, resp.headers.get("retry-after"), deployment)
        content_type = resp.headers.get("content-type", "application/json")
        if call.endpoint is Endpoint.TRANSCRIPTION:
            return transcription_reply(body, content_type)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("upstream answered 200 with a body that is not JSON",
                                error_class=ErrorClass.SERVER_ERROR) from exc
        failure = incomplete_reply(call.endpoint, data)
        if failure is not None:
            raise failure
        if call.endpoint in NATIVE:
            return UpstreamReply(body=body, usage=native_usage(call.endpoint, data),
                                 content_type=content_type.split(";")[0])
        if call.endpoint in IMAGE_ENDPOINTS:
            return UpstreamReply(body=body, usage=image_usage(data, call.body), content_type=content_type.split(";")[0])
        return UpstreamReply(body=body, usage=Usage.from_openai(data.get("usage")),
                             content_type=content_type.split(";")[0])

    async def open_stream(self, call: UpstreamCall) -> SSERelay | NativeSSERelay | AudioRelay:
        deployment = call.deployment.name
        first_token_s = min(call.timeouts.first_token_s, call.timeouts.total_s)
        try:
            async with asyncio.timeout(first_token_s):
                resp = await self._request(call, True)
                relay: SSERelay | NativeSSERelay | AudioRelay
                if call.endpoint in NATIVE:
                    relay = NativeSSERelay(resp, call.endpoint)
                elif call.endpoint is Endpoint.SPEECH:
                    relay = AudioRelay(resp)
                else:
                    relay = SSERelay(resp, hide_usage_chunk=not call.client_wants_usage)
                try:
                    if resp.status >= 400:
                        body = await resp.read()
                        raise upstream_error(resp.status, body, resp.headers.get("retry-after"), deployment)
                    if isinstance(relay, AudioRelay):
                        pass  # any audio type: relayed as the upstream labels it
                    elif not resp.headers.get("content-type", "").startswith("text/event-stream"):
                        raise await _non_stream_answer(resp, deployment)
                    await relay.read_first()
                except BaseException:
                    resp.release()
                    raise
        except TRANSPORT_ERRORS as exc:
            timed_out = f"no first token within the first_token timeout of {first_token_s:g}s"
            raise transport_failure(exc, timed_out=timed_out, connect_s=call.timeouts.connect_s) from exc
        return relay


async def _non_stream_answer(resp: Response, deployment: str) -> UpstreamError:
    body = await resp.read()
    failure = upstream_error(500, body, None, deployment)
    if failure.error_class is ErrorClass.BAD_REQUEST:
        failure.error_class = ErrorClass.SERVER_ERROR
    failure.message = f"upstream answered a stream request without an event stream: {failure.message}"
    return failure
