"""The whole app in-process: the official openai client over httpx's ASGI transport, fake providers injected."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import openai
import orjson
import pytest

from gateway.app import create_app
from gateway.error_classes import ErrorClass
from gateway.settings import Settings
from tests.unit.api.fake_provider import Script, factory, policy_table

BASE = "http://polyroute.test"
MESSAGES = [{"role": "user", "content": "Say hello."}]


@asynccontextmanager
async def app_client(scripts: dict[str, Script]) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and an httpx client whose requests go straight into it."""
    app = create_app(Settings(watch_policy=False), table=policy_table(), provider_factory=factory(scripts))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield http


@asynccontextmanager
async def gateway(scripts: dict[str, Script], key: str = "sk-open") -> AsyncIterator[openai.AsyncOpenAI]:
    """The official openai client on the in-process app."""
    async with app_client(scripts) as http:
        client = openai.AsyncOpenAI(base_url=f"{BASE}/v1", api_key=key, http_client=http, max_retries=0)
        async with client:
            yield client


async def test_a_chat_request_is_answered_by_the_first_target() -> None:
    scripts = {"first": Script(text="hello from one")}
    async with gateway(scripts) as client:
        raw = await client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    reply = raw.parse()
    assert reply.choices[0].message.content == "hello from one"
    assert reply.usage is not None and reply.usage.total_tokens == 7
    assert raw.headers["x-polyroute-deployment"] == "one"
    assert raw.headers["x-polyroute-attempts"] == "1"
    assert scripts["first"].calls[0].body["model"] == "model-one"  # the alias became the deployment's model


async def test_a_failing_target_falls_back_to_the_next() -> None:
    scripts = {"first": Script(error_class=ErrorClass.SERVER_ERROR), "second": Script(text="hello from two")}
    async with gateway(scripts) as client:
        raw = await client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    assert raw.parse().choices[0].message.content == "hello from two"
    assert raw.headers["x-polyroute-deployment"] == "two"
    assert raw.headers["x-polyroute-attempts"] == "2"
    assert raw.headers["x-polyroute-fallback-reason"] == "server_error"


@pytest.mark.parametrize(
    ("error_class", "status", "code"),
    [
        (ErrorClass.TIMEOUT, 504, "upstream_timeout"),
        (ErrorClass.CONNECTION_ERROR, 503, "upstream_unavailable"),
        (ErrorClass.SERVER_ERROR, 502, "upstream_error"),
    ],
)
async def test_when_every_target_fails_the_status_says_how(error_class: ErrorClass, status: int, code: str) -> None:
    scripts = {"first": Script(error_class=error_class), "second": Script(error_class=error_class)}
    async with gateway(scripts) as client:
        with pytest.raises(openai.APIStatusError) as raised:
            await client.chat.completions.create(model="chat", messages=MESSAGES)
    assert raised.value.status_code == status
    assert raised.value.code == code
    assert "one: " in raised.value.message and "two: " in raised.value.message  # each target's cause is named
    assert raised.value.response.headers["x-polyroute-attempts"] == "2"


async def test_a_stream_that_breaks_after_the_first_byte_ends_with_an_error_event() -> None:
    scripts = {"first": Script(text="hel", fail_after_first=True), "second": Script(text="never")}
    async with gateway(scripts) as client:
        stream = await client.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
        received: list[str] = []
        with pytest.raises(openai.APIError) as raised:
            async for part in stream:
                received.append(part.choices[0].delta.content or "")
        await stream.close()
    assert received == ["hel"]  # what was relayed stays relayed: no failover after the first byte
    assert "stream broke" in raised.value.message
    assert scripts["second"].calls == []


async def test_the_broken_stream_on_the_wire_is_the_event_then_the_error_then_done() -> None:
    scripts = {"first": Script(text="hel", fail_after_first=True)}
    async with app_client(scripts) as http:
        body = {"model": "chat", "messages": MESSAGES, "stream": True}
        response = await http.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer sk-open"})
    events = response.content.split(b"\n\n")
    assert response.status_code == 200
    assert b'"content":"hel"' in events[0]
    error = orjson.loads(events[1].removeprefix(b"data: "))["error"]
    assert error["type"] == "api_error" and "stream broke" in error["message"]
    assert events[2:] == [b"data: [DONE]", b""]


async def test_admission_refuses_past_the_tenants_rate_limit() -> None:
    async with gateway({}, key="sk-limited") as client:
        await client.chat.completions.create(model="chat", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as raised:
            await client.chat.completions.create(model="chat", messages=MESSAGES)
    assert raised.value.status_code == 429
    assert "1 requests per minute" in raised.value.message
    assert int(raised.value.response.headers["retry-after"]) >= 1
    assert raised.value.response.headers["x-ratelimit-limit-requests"] == "1"


async def test_a_stopped_app_leaves_the_process_signal_handlers_as_it_found_them() -> None:
    term, hup = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
    async with gateway({}) as client:
        await client.chat.completions.create(model="chat", messages=MESSAGES)
        assert signal.getsignal(signal.SIGTERM) is not term  # the drain watches SIGTERM while the app runs
    assert signal.getsignal(signal.SIGTERM) is term
    assert signal.getsignal(signal.SIGHUP) is hup


async def test_a_wrong_method_is_a_405_envelope_naming_the_allowed_ones() -> None:
    async with app_client({}) as http:
        answer = await http.get("/v1/chat/completions", headers={"authorization": "Bearer sk-open"})
        messages = await http.get("/v1/messages", headers={"x-api-key": "sk-open"})
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    assert answer.json()["error"]["code"] == "method_not_allowed"
    assert messages.status_code == 405 and messages.json()["type"] == "error"  # Anthropic's shape there


async def test_a_proxied_request_leaves_no_reference_cycle_for_the_garbage_collector() -> None:
    """The gateway raises Python's young-collection threshold (gateway.process_memory): that is safe only while a
    request's objects are freed when it ends. A cycle through a request's guard kept its task, coroutine and
    frame alive until a collection."""
    from gateway.api.lifetime import Guard

    body, key = {"model": "chat", "messages": MESSAGES}, {"authorization": "Bearer sk-open"}
    async with app_client({"first": Script(text="hello")}) as http:
        await http.post("/v1/chat/completions", json=body, headers=key)  # warm: caches filled
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(20):
                answer = await http.post("/v1/chat/completions", json=body, headers=key)
                assert answer.status_code == 200
            gc.collect()
            left = [type(o).__qualname__ for o in gc.garbage if isinstance(o, Guard | asyncio.Task)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert left == []
