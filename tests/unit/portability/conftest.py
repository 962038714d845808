"""Shared by the portability tests: a policy with three vendors and rules, usage rows and routing facts."""

from __future__ import annotations

import pytest

from gateway.policy.loader import load_policy_text
from gateway.policy.pricing import CurrencyRates
from gateway.policy.table import PolicyTable
from gateway.state.base import RoutingFactRow, RoutingFacts, UsageRow

POLICY = """
version: 1
providers:
  cloud: {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: cloud, jurisdiction: sg, vendor: alibaba}
  gpu: {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: self_hosted, jurisdiction: onprem, vendor: self}
  anth: {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: cloud, jurisdiction: us, vendor: anthropic}
deployments:
  qwen-plus: {provider: cloud, model: qwen3.6-plus, context_window: 1000000,
              price: {input_per_mtok: 1, output_per_mtok: 2, currency: USD}}
  qwen-local: {provider: gpu, model: qwen3-32b, context_window: 32768,
               price: {input_per_mtok: 0.5, output_per_mtok: 0.5, currency: USD}}
  son: {provider: anth, model: claude-sonnet, context_window: 200000,
        price: {input_per_mtok: 3, output_per_mtok: 15, currency: USD}}
aliases:
  coder: {targets: [qwen-plus, qwen-local], critical: true}
  chat: {targets: [qwen-plus, son]}
  solo: {targets: [qwen-plus]}
rules:
  - name: pii-stays-home
    when: {data_class: [pii]}
    require: {hosting: self_hosted}
  - name: team-b-not-us
    when: {tenant: [team-b]}
    require: {jurisdiction_not: [us]}
"""


@pytest.fixture
def table() -> PolicyTable:
    return load_policy_text(POLICY, {}, fx=CurrencyRates(usd_per_cny=0.14, usd_per_eur=1.08))


def usage(deployment: str, vendor: str, requests: int, tokens: int, cost: float, latency: float) -> UsageRow:
    hosting = "self_hosted" if vendor == "self" else "cloud"
    jurisdiction = {"alibaba": "sg", "self": "onprem", "anthropic": "us"}[vendor]
    return UsageRow(
        day="2026-12-06", tenant="team-a", alias="coder", deployment=deployment, provider="p", vendor=vendor,
        hosting=hosting, jurisdiction=jurisdiction, requests=requests, input_tokens=tokens, output_tokens=0,
        cost_usd=cost, latency_s_sum=latency * requests,
    )


USAGE = [
    usage("qwen-plus", "alibaba", 6, 500, 6.0, 1.0),
    usage("qwen-local", "self", 2, 500, 2.0, 2.0),
    usage("son", "anthropic", 2, 0, 2.0, 3.0),
]


def fact(alias: str, deployment: str, requests: int, **kw: object) -> RoutingFactRow:
    fields: dict[str, object] = {
        "day": "2026-12-06", "alias": alias, "tenant": "team-a", "deployment": deployment, "endpoint": "chat",
        "stream": False, "data_class": None, "tags": (), "prompt_tokens": 100, "max_output_tokens": None,
        "needs": (), "params": (), "requests": requests, "input_tokens": 100 * requests,
        "output_tokens": 10 * requests,
    }
    fields.update(kw)
    return RoutingFactRow(**fields)  # type: ignore[arg-type]


FACTS = RoutingFacts(
    (
        fact("coder", "qwen-plus", 3),
        fact("coder", "qwen-local", 1, data_class="pii"),
        fact("coder", "qwen-plus", 1, prompt_tokens=40_000, input_tokens=40_000),  # too long for qwen-local
        fact("chat", "qwen-plus", 2, params=("enable_thinking",)),
        fact("chat", "qwen-plus", 2, tenant="team-b"),  # the only other vendor is in a jurisdiction team-b may not use
        fact("chat", "qwen-plus", 1, data_class="pii"),  # no self-hosted target at all: refused today already
    ),
    dropped=7,
)
