"""The golden corpus: recorded-shape answers relayed by the fast-path provider from a raw upstream, their usage
read as the gateway reads it, and priced by accounting; each cost matches its exact decimal value to 1e-9 USD.

The corpus (golden/corpus.json, written by golden/build_corpus.py) covers chat replies and streams with cached and
reasoning tokens, Model Studio's tiers and explicit cache writes, a thinking-mode output price, Anthropic cache
reads and writes through the Messages relay, embeddings, and a dated price book before and after its date.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.observability.accounting import request_charge
from gateway.policy.loader import load_policy_text
from gateway.policy.pricing import CurrencyRates
from gateway.providers.base import Endpoint, Usage
from tests.unit.providers.raw_http import CHUNKED, LAST_CHUNK, Serve, call_for, chunk, ok, provider_for, replies

CORPUS = json.loads((Path(__file__).parent / "golden" / "corpus.json").read_text(encoding="utf-8"))["cases"]
FX = CurrencyRates(usd_per_cny=0.14, usd_per_eur=1.08)
POLICY = """
version: 1
providers:
  up: {base_url: "http://127.0.0.1:9/v1", hosting: cloud, jurisdiction: us, vendor: example}
deployments:
  dep: {provider: up, model: m, price: PRICE}
aliases:
  a: {targets: [dep]}
"""
ENDPOINTS = {"chat": Endpoint.CHAT, "messages": Endpoint.MESSAGES, "embedding": Endpoint.EMBEDDING}


def wire(case: dict[str, Any]) -> bytes:
    """The upstream's answer as it was recorded: one JSON body, or an SSE stream (Anthropic's with event names)."""
    if not case["stream"]:
        return ok(orjson.dumps(case["answer"]))
    if case["endpoint"] == "messages":
        events = [b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps(data)) for name, data in case["answer"]]
    else:
        events = [b"data: %s\n\n" % orjson.dumps(data) for data in case["answer"]] + [b"data: [DONE]\n\n"]
    return CHUNKED + b"".join(chunk(event) for event in events) + LAST_CHUNK


async def usage_read(serve: Serve, case: dict[str, Any]) -> Usage | None:
    up = await serve(replies(wire(case)))
    provider = provider_for(up)
    call = call_for(ENDPOINTS[case["endpoint"]], stream=case["stream"])
    try:
        if not case["stream"]:
            return (await provider.send(call)).usage
        relay = await provider.open_stream(call)
        try:
            async for _ in relay.events():
                pass
            return relay.usage
        finally:
            await relay.aclose()
    finally:
        await provider.close()


def test_the_corpus_covers_what_the_bill_depends_on() -> None:
    assert len(CORPUS) >= 100
    kinds = {(c["endpoint"], c["stream"]) for c in CORPUS}
    assert {("chat", False), ("chat", True), ("messages", False), ("messages", True), ("embedding", False)} <= kinds
    names = " ".join(c["name"] for c in CORPUS)
    for needed in ("qwen3.6-plus-intl", "in=256001", "written=4096", "reasoning=300", "read=4000", "dated book"):
        assert needed in names


@pytest.mark.parametrize("case", CORPUS, ids=[c["name"] for c in CORPUS])
async def test_each_recorded_answer_costs_what_the_bill_says(serve: Serve, case: dict[str, Any]) -> None:
    deployment = load_policy_text(POLICY.replace("PRICE", case["price"]), {}, fx=FX).deployments["dep"]
    usage = await usage_read(serve, case)
    assert usage is not None
    bill = request_charge(deployment, usage, now=case["at"])
    assert abs(Decimal(repr(bill.usd)) - Decimal(case["expected_usd"])) <= Decimal("1e-9")
