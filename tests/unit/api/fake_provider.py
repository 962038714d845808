"""Provider adapters with scripted answers, injected through create_app's `provider_factory` (no patching)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import orjson

from gateway.error_classes import ErrorClass
from gateway.errors import UpstreamError
from gateway.policy.loader import load_policy_text
from gateway.policy.pricing import CurrencyRates
from gateway.policy.table import PolicyTable
from gateway.policy.table import Provider as ProviderConfig
from gateway.providers.base import UpstreamCall, UpstreamReply, Usage

# Two providers of one alias in priority order; `limited` may send one request a minute, `open` is unlimited.
POLICY = """
version: 1
providers:
  first:  {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: cloud, jurisdiction: sg, vendor: v}
  second: {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: self_hosted, jurisdiction: onprem, vendor: self}
deployments:
  one: {provider: first, model: model-one}
  two: {provider: second, model: model-two}
aliases:
  chat: {targets: [one, two], strategy: priority}
fallback:
  on: [rate_limit, timeout, server_error, connection_error]
  retries: {attempts: 0}
tenants:
  open:    {api_keys: [sk-open]}
  limited: {api_keys: [sk-limited], limits: {rpm: 1}}
"""


def policy_table() -> PolicyTable:
    return load_policy_text(POLICY, {}, fx=CurrencyRates())


def chat_reply(model: str, text: str) -> bytes:
    return orjson.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    })


def chunk(model: str, text: str) -> bytes:
    data = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + orjson.dumps(data) + b"\n\n"


@dataclass
class Script:
    """What a fake provider does: answer, or fail with `error_class` before the answer or after `chunks`."""

    text: str = "hello"
    error_class: ErrorClass | None = None
    fail_after_first: bool = False  # a stream that breaks once its first event was relayed
    calls: list[UpstreamCall] = field(default_factory=list)


class FakeStream:
    """A stream whose first event arrived; the rest follows, or a failure after the first byte."""

    def __init__(self, call: UpstreamCall, script: Script) -> None:
        self._model, self._script = call.deployment.model, script
        self.first_event = chunk(self._model, script.text)
        self.usage: Usage | None = None
        self.closed = False

    async def events(self) -> AsyncIterator[bytes]:
        if self._script.fail_after_first:
            raise UpstreamError("stream broke: connection reset", error_class=ErrorClass.CONNECTION_ERROR)
        yield chunk(self._model, "!")
        self.usage = Usage(input_tokens=5, output_tokens=2)
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        self.closed = True


class FakeProvider:
    def __init__(self, name: str, script: Script) -> None:
        self.name = name
        self._script = script

    def _fail_early(self, call: UpstreamCall) -> None:
        self._script.calls.append(call)
        if self._script.error_class is not None and not self._script.fail_after_first:
            raise UpstreamError(f"{self.name} failed", error_class=self._script.error_class, upstream_status=None)

    async def send(self, call: UpstreamCall) -> UpstreamReply:
        self._fail_early(call)
        return UpstreamReply(chat_reply(call.deployment.model, self._script.text), Usage(5, 2))

    async def open_stream(self, call: UpstreamCall) -> FakeStream:
        self._fail_early(call)
        return FakeStream(call, self._script)

    async def close(self) -> None:
        """Nothing to release."""


def factory(scripts: dict[str, Script]) -> Callable[[ProviderConfig], FakeProvider]:
    """A provider factory serving each configured provider from its script (by provider name)."""
    return lambda config: FakeProvider(config.name, scripts.setdefault(config.name, Script()))
