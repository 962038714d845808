"""Providers that need request translation (Anthropic, Gemini, Bedrock, ...) via litellm: its only importer."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import orjson

from gateway.error_classes import ErrorClass
from gateway.errors import UpstreamError
from gateway.policy.table import Provider
from gateway.providers.base import Endpoint, UpstreamCall, UpstreamReply, Usage
from gateway.providers.failures import classify_status, inband_error, parse_retry_after
from gateway.providers.images import image_usage
from gateway.providers.litellm_params import forwarded_params
from gateway.settings import prepare_litellm_environment

prepare_litellm_environment()  # before the import below: never download the price map

import litellm  # noqa: E402
from litellm import exceptions as llx  # noqa: E402
from litellm.llms.custom_httpx.async_client_cleanup import close_litellm_async_clients  # noqa: E402

# What litellm imports only on its first call: the OpenAI SDK's resources (its client's `.chat`), its proxy's file-id
# helpers, the tiktoken encoding it counts tokens with, fastapi's HTTPException (its error mapping). Together about a
# second, which the first stream spent inside its first_token budget: a healthy upstream timed out and the request
# failed over. Loaded with this module instead, once per process, when a policy first names a litellm provider.
_FIRST_CALL_IMPORTS = (
    "openai.resources",
    "litellm.proxy.openai_files_endpoints.common_utils",
    "litellm.litellm_core_utils.default_encoding",
    "fastapi.exceptions",
)


def _load_first_call_imports() -> None:
    for name in _FIRST_CALL_IMPORTS:
        with contextlib.suppress(ImportError):  # another litellm may not have it: then only its first call is slower
            importlib.import_module(name)


_load_first_call_imports()

_CLASSES: tuple[tuple[type[BaseException], ErrorClass], ...] = (
    (llx.ContextWindowExceededError, ErrorClass.CONTEXT_WINDOW),
    (llx.ContentPolicyViolationError, ErrorClass.CONTENT_POLICY),
    (llx.RateLimitError, ErrorClass.RATE_LIMIT),
    (llx.Timeout, ErrorClass.TIMEOUT),
    (llx.APIConnectionError, ErrorClass.CONNECTION_ERROR),
    (llx.AuthenticationError, ErrorClass.AUTH),
    (llx.PermissionDeniedError, ErrorClass.AUTH),
    (llx.NotFoundError, ErrorClass.NOT_FOUND),
    (llx.BadRequestError, ErrorClass.BAD_REQUEST),
    (llx.UnprocessableEntityError, ErrorClass.BAD_REQUEST),
)


# litellm's generic classes: the upstream's own words may say more (Model Studio's DataInspectionFailed is a 400,
# its Arrearage a 400 or 403, its spent free quota a 429).
_GENERIC = frozenset(
    {ErrorClass.BAD_REQUEST, ErrorClass.SERVER_ERROR, ErrorClass.AUTH, ErrorClass.RATE_LIMIT, ErrorClass.NOT_FOUND}
)
_SPECIFIC = frozenset(
    {ErrorClass.CONTEXT_WINDOW, ErrorClass.CONTENT_POLICY, ErrorClass.RATE_LIMIT, ErrorClass.TIMEOUT,
     ErrorClass.ACCOUNT, ErrorClass.QUOTA_EXHAUSTED, ErrorClass.RETIRED}
)


def _transport_class(exc: BaseException) -> ErrorClass | None:
    """What the exceptions litellm wrapped say: it reports a dropped connection as a 500 and broken JSON as a
    connection error, but the httpx or JSON error it started from is in the chain."""
    current: BaseException | None = exc
    for _ in range(12):  # bounded: chains are short, and could in theory loop
        if current is None:
            return None
        if isinstance(current, httpx.TimeoutException | openai.APITimeoutError):
            return ErrorClass.TIMEOUT
        if isinstance(current, httpx.TransportError):
            return ErrorClass.CONNECTION_ERROR
        if isinstance(current, ValueError):  # json.JSONDecodeError: the upstream's answer was malformed
            return ErrorClass.SERVER_ERROR
        current = current.__cause__ or current.__context__
    return None


def _inband(exc: BaseException) -> UpstreamError | None:
    """The openai SDK raises a bare APIError for a `data: {"error": ...}` frame; litellm calls it a connection
    error. Its body is the upstream's own error object: classify that."""
    current: BaseException | None = exc
    for _ in range(12):
        if current is None:
            return None
        if type(current) is openai.APIError and isinstance(current.body, dict):
            return inband_error({"error": current.body})
        current = current.__cause__ or current.__context__
    return None


def classify(exc: openai.OpenAIError) -> UpstreamError:
    original = getattr(exc, "original_exception", None)
    if isinstance(exc, llx.MidStreamFallbackError) and isinstance(original, openai.OpenAIError):
        return classify(original)  # litellm wraps what broke the stream; the cause is what counts
    inband = _inband(exc)
    if inband is not None:
        return inband
    error_class = ErrorClass.SERVER_ERROR
    for kind, cls in _CLASSES:
        if isinstance(exc, kind):
            error_class = cls
            break
    if error_class in (ErrorClass.SERVER_ERROR, ErrorClass.CONNECTION_ERROR):
        error_class = _transport_class(exc) or error_class
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) and 400 <= status <= 599 else None
    retry_after = None
    response = getattr(exc, "response", None)
    if response is not None and hasattr(response, "headers"):
        retry_after = parse_retry_after(response.headers.get("retry-after"))
    message = str(getattr(exc, "message", None) or exc)[:300]
    if error_class in _GENERIC:
        by_words = classify_status(status, message, "")
        if by_words in _SPECIFIC:
            error_class = by_words
    return UpstreamError(message, error_class=error_class, upstream_status=status, retry_after=retry_after)


# What a litellm call raises: its exceptions (the openai SDK's classes), and the deadlines kept around it.
FAILURES = (TimeoutError, openai.OpenAIError)


def litellm_failure(exc: TimeoutError | openai.OpenAIError, *, timed_out: str) -> UpstreamError:
    """The one mapping of a litellm call's failures to classified UpstreamErrors (as httpx's `map_exceptions`):
    `timed_out` says which of polyroute's deadlines passed."""
    if isinstance(exc, TimeoutError):
        return UpstreamError(timed_out, error_class=ErrorClass.TIMEOUT)
    return classify(exc)


async def close_shared_clients() -> None:
    """litellm pools its HTTP clients process-wide, not per provider: closed once, when the gateway stops."""
    await close_litellm_async_clients()


class LiteLLMProvider:
    """Translates OpenAI-shaped requests for providers litellm knows, and their answers back to OpenAI shape."""

    def __init__(self, provider: Provider) -> None:
        self.name = provider.name
        self._prefix = provider.litellm_prefix or ""
        self._api_key = provider.api_key or None
        self._api_base = provider.base_url or None
        self._headers = dict(provider.headers) or None

    async def close(self) -> None:
        """Nothing of its own to release: litellm's pooled clients are shared (see close_shared_clients)."""

    def _kwargs(self, call: UpstreamCall) -> dict[str, Any]:
        """The allowed request parameters (litellm_params), then what only the policy decides: where, with which
        key and headers, how long."""
        kwargs = forwarded_params(call.endpoint, call.body, self.name)
        kwargs["model"] = f"{self._prefix}/{call.deployment.model}"
        # httpx applies `read` between bytes; the whole-request `total` is enforced around the call below.
        kwargs["timeout"] = httpx.Timeout(call.timeouts.total_s, connect=call.timeouts.connect_s)
        kwargs["num_retries"] = 0  # retries and fallback belong to the gateway
        if self._api_key:
            kwargs["api_key"] = self._api_key
        if self._api_base:
            kwargs["api_base"] = self._api_base
        if self._headers or call.trace_headers:  # litellm sends extra_headers as they are (traceparent)
            kwargs["extra_headers"] = {**(self._headers or {}), **dict(call.trace_headers)}
        return kwargs

    async def send(self, call: UpstreamCall) -> UpstreamReply:
        kwargs = self._kwargs(call)
        try:
            async with asyncio.timeout(call.timeouts.total_s):  # a non-stream answer has no first token
                if call.endpoint is Endpoint.EMBEDDING:
                    result: Any = await litellm.aembedding(input=call.body.get("input"), **kwargs)
                elif call.endpoint is Endpoint.IMAGE:
                    result = await litellm.aimage_generation(prompt=call.body.get("prompt"), **kwargs)
                elif call.endpoint is Endpoint.COMPLETION:
                    result = await litellm.atext_completion(prompt=call.body.get("prompt"), **kwargs)
                else:
                    result = await litellm.acompletion(messages=call.body.get("messages"), **kwargs)
        except FAILURES as exc:
            timed_out = f"no complete answer within the total timeout of {call.timeouts.total_s:g}s"
            raise litellm_failure(exc, timed_out=timed_out) from exc
        data = result.model_dump(exclude_none=True)
        data.pop("_hidden_params", None)
        if call.endpoint is Endpoint.IMAGE:
            return UpstreamReply(body=orjson.dumps(data), usage=image_usage(data, call.body))
        return UpstreamReply(body=orjson.dumps(data), usage=Usage.from_openai(data.get("usage")))

    async def open_stream(self, call: UpstreamCall) -> LiteLLMStream:
        kwargs = self._kwargs(call)
        kwargs["stream"] = True
        kwargs["stream_options"] = {"include_usage": True}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + call.timeouts.total_s
        first_token_s = min(call.timeouts.first_token_s, call.timeouts.total_s)
        try:
            async with asyncio.timeout(first_token_s):
                if call.endpoint is Endpoint.COMPLETION:
                    wrapper = await litellm.atext_completion(prompt=call.body.get("prompt"), **kwargs)
                else:
                    wrapper = await litellm.acompletion(messages=call.body.get("messages"), **kwargs)
                stream = LiteLLMStream(wrapper, hide_usage_chunk=not call.client_wants_usage, deadline=deadline)
                await stream.read_first()
        except FAILURES as exc:
            timed_out = f"no first token within the first_token timeout of {first_token_s:g}s"
            raise litellm_failure(exc, timed_out=timed_out) from exc
        return stream


def _usage_only(data: dict[str, Any]) -> bool:
    """litellm's usage chunk carries an empty choice where OpenAI sends `choices: []`."""
    return all(
        not c.get("delta") and not c.get("finish_reason") and not c.get("text")
        for c in data.get("choices") or []
        if isinstance(c, dict)
    )


class LiteLLMStream:
    """Re-serialises litellm's stream chunks as OpenAI SSE events."""

    def __init__(self, wrapper: Any, *, hide_usage_chunk: bool, deadline: float) -> None:
        self._iter = wrapper.__aiter__()
        self._deadline = deadline  # loop time when the whole request's `total` runs out
        self._hide_usage_chunk = hide_usage_chunk
        self._usage: Usage | None = None
        self.first_event = b""

    @property
    def usage(self) -> Usage | None:
        return self._usage

    async def read_first(self) -> None:
        event = await self._next()
        if event is None:
            raise UpstreamError("stream ended before any event", error_class=ErrorClass.SERVER_ERROR)
        self.first_event = event

    async def _next(self) -> bytes | None:
        while True:
            try:
                chunk = await self._iter.__anext__()
            except StopAsyncIteration:
                return None
            data = chunk.model_dump(exclude_none=True)
            usage = data.get("usage")
            if usage:
                self._usage = Usage.from_openai(usage)
                if _usage_only(data):
                    if self._hide_usage_chunk:
                        continue
                    data["choices"] = []  # OpenAI's shape for the usage chunk
                elif self._hide_usage_chunk:
                    data.pop("usage")
            return b"data: " + orjson.dumps(data) + b"\n\n"

    async def events(self) -> AsyncIterator[bytes]:
        try:
            while True:
                async with asyncio.timeout_at(self._deadline):
                    event = await self._next()
                if event is None:
                    break
                yield event
        except FAILURES as exc:
            raise litellm_failure(exc, timed_out="stream exceeded the total timeout") from exc
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        close = getattr(self._iter, "aclose", None)
        if close is not None:
            await close()
