"""Cost in the price's own currency beside USD, and the price entry each recorded cost came from."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.observability import names
from gateway.observability.accounting import Accountant, FinishedRequest
from gateway.observability.metrics import Metrics
from gateway.observability.usage_report import summarize
from gateway.policy.loader import load_policy_text
from gateway.policy.pricing import CurrencyRates
from gateway.providers.base import Usage
from gateway.state.base import utc_day
from gateway.state.memory import MemoryStateStore

POLICY = """
version: 1
providers:
  bj: {base_url: "https://dashscope.aliyuncs.com/compatible-mode/v1", hosting: cloud, jurisdiction: cn, vendor: alibaba}
deployments:
  qwen-bj:
    provider: bj
    model: qwen3.6-plus
    price:
      - {input_per_mtok: 2, output_per_mtok: 12, cached_input_per_mtok: 0.4, currency: CNY}
      - {effective_from: 2000-01-01, input_per_mtok: 4, output_per_mtok: 16, cached_input_per_mtok: 0.8,
         cache_write_per_mtok: 5, currency: CNY}
aliases:
  coder: {targets: [qwen-bj]}
"""
TABLE = load_policy_text(POLICY, {}, fx=CurrencyRates(usd_per_cny=0.14))


def cost_samples(metrics: Metrics) -> dict[tuple[str, str], float]:
    body, _ = metrics.render()
    return {
        (s.name, s.labels.get("currency", "")): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name in (names.COST_TOTAL, names.COST_USD_TOTAL)
    }


async def test_a_cny_price_is_exported_in_cny_and_in_usd_and_usage_names_the_entry() -> None:
    metrics = Metrics()
    metrics.set_known(aliases=["coder"], deployments=TABLE.deployments, providers=TABLE.providers,
                      tenants=["team-a"], vendors=["alibaba"])
    store = MemoryStateStore()
    accountant = Accountant(store, metrics)
    await accountant.start()
    usage = Usage(input_tokens=10_000, output_tokens=1_000, cached_tokens=4_000, cache_write_tokens=1_000)
    done = FinishedRequest(tenant="team-a", alias="coder", deployment=TABLE.deployments["qwen-bj"], status=200,
                           stream=False, duration_s=0.1, overhead_s=0.001, first_token_s=None, usage=usage,
                           attempts=1, fallback=False)
    usd = accountant.finish(done)
    await accountant.close()

    # the 2000-01-01 entry is in force: 5,000 fresh at 4, 4,000 read at 0.8, 1,000 written at 5, 1,000 out at 16
    cny = (5_000 * 4 + 4_000 * 0.8 + 1_000 * 5 + 1_000 * 16) / 1e6
    samples = cost_samples(metrics)
    assert samples[(names.COST_TOTAL, "CNY")] == pytest.approx(cny, abs=1e-12)
    assert samples[(names.COST_USD_TOTAL, "")] == pytest.approx(cny * 0.14, abs=1e-12)
    assert usd == pytest.approx(cny * 0.14, abs=1e-12)
    today = utc_day(time.time())
    report = summarize(await store.usage(today, today), ["deployment"])
    (group,) = report["groups"]
    assert group["cost_usd_by_price"] == {"policy[1] from 2000-01-01": pytest.approx(cny * 0.14, abs=1e-6)}
    assert group["cache_write_tokens"] == 1_000


def test_days_to_retirement_follow_the_policy_and_a_removed_date_drops_its_series() -> None:
    metrics = Metrics()
    metrics.set_known(aliases=["coder"], deployments=["qwen-old", "qwen-plus"], providers=["bj"], tenants=[],
                      vendors=["alibaba"])
    metrics.days_to_retirement({"qwen-old": 12, "qwen-plus": -1})
    body, _ = metrics.render()
    assert 'polyroute_deployment_days_to_retirement{deployment="qwen-old"} 12.0' in body.decode()
    metrics.days_to_retirement({"qwen-plus": -2})  # a reload took qwen-old's date away
    text = metrics.render()[0].decode()
    assert 'polyroute_deployment_days_to_retirement{deployment="qwen-old"}' not in text
    assert 'polyroute_deployment_days_to_retirement{deployment="qwen-plus"} -2.0' in text
