"""A stream relayed from the upstream connection's callbacks (`SSERelay.relay_to`) reaches the client as the same
events as one read by `events()`, however the bytes are split and however slowly the client reads."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import UpstreamError
from gateway.providers.base import DirectStream, Endpoint
from tests.unit.providers.raw_http import Serve, call_for, provider_for
from tests.unit.providers.test_openai_relay import CHAT_RELAYED, CHAT_STREAM, MANY_TOKENS, split_stream

INBAND_ERROR = (
    b'data: {"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":null}]}\n\n'
    b'data: {"error": {"message": "Input data may contain inappropriate content.", "code": "DataInspectionFailed"}}\n\n'
    b"data: [DONE]\n\n"
)


class ClientWriter:
    """The client's side as the server offers it: what was written, and a buffer that is full every `full_every`
    writes until drained (0: never)."""

    def __init__(self, full_every: int = 0) -> None:
        self.written: list[bytes] = []
        self.drains = 0
        self._full_every = full_every
        self.gone = False

    def write(self, data: bytes) -> bool:
        self.written.append(data)
        return not self._full_every or len(self.written) % self._full_every != 0

    async def drain(self) -> None:
        self.drains += 1
        await asyncio.sleep(0.002)  # the client reads meanwhile


async def relayed(serve: Serve, body: bytes, piece: int, writer: ClientWriter) -> tuple[bytes, int]:
    """What the client gets: the first event, what relay_to wrote, then what events() still had; and the count."""
    up = await serve(split_stream(body, piece))
    provider = provider_for(up)
    try:
        relay = await provider.open_stream(call_for(Endpoint.CHAT, stream=True))
        try:
            assert isinstance(relay, DirectStream)
            count = await relay.relay_to(writer)
            rest = [events async for events in relay.events()]
            return relay.first_event + b"".join(writer.written) + b"".join(rest), count
        finally:
            await relay.aclose()
    finally:
        await provider.close()


CASES = [  # (upstream body, what the client gets, bytes per upstream write); a write a millisecond
    *((CHAT_STREAM, CHAT_RELAYED, piece) for piece in (1, 7, 100, 1 << 20)),
    *((MANY_TOKENS, MANY_TOKENS, piece) for piece in (5, 100, 1 << 20)),
]


@pytest.mark.parametrize("full_every", [0, 1, 3], ids=["client-keeps-up", "client-always-full", "client-full-at-times"])
@pytest.mark.parametrize(("body", "expected", "piece"), CASES,
                         ids=[f"{'mixed' if b is CHAT_STREAM else 'many-tokens'}-{p}-bytes" for b, _, p in CASES])
async def test_the_direct_relay_gives_the_client_the_same_events(
    serve: Serve, piece: int, full_every: int, body: bytes, expected: bytes
) -> None:
    writer = ClientWriter(full_every)
    received, count = await relayed(serve, body, piece, writer)
    assert received == expected
    assert count == b"".join(writer.written).count(b"\n\n")  # events relayed directly, as the caller counts them
    if full_every == 1 and len(writer.written) > 1:
        assert writer.drains  # a full client buffer was waited for before the upstream was read on


@pytest.mark.parametrize("piece", [1, 9, 1 << 20], ids=lambda n: f"{n}-bytes-a-write")
async def test_an_inband_error_ends_the_direct_relay_after_the_events_before_it(serve: Serve, piece: int) -> None:
    up = await serve(split_stream(INBAND_ERROR, piece))
    provider = provider_for(up)
    writer = ClientWriter()
    try:
        relay = await provider.open_stream(call_for(Endpoint.CHAT, stream=True))
        try:
            assert isinstance(relay, DirectStream)
            with pytest.raises(UpstreamError, match="inappropriate content"):
                await relay.relay_to(writer)
        finally:
            await relay.aclose()
    finally:
        await provider.close()
    assert (relay.first_event + b"".join(writer.written)).count(b'"content":') == 2
