"""The price book: tiers chosen by a request's whole input, cache reads and writes, thinking output, dated entries."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from gateway.errors import PolicyError
from gateway.policy.charges import charge, text_estimate
from gateway.policy.loader import load_policy_text
from gateway.policy.pricing import CurrencyRates
from gateway.policy.retirement import retirement_notes
from gateway.policy.table import PolicyTable, Price

FX = CurrencyRates(usd_per_cny=0.14, usd_per_eur=1.08)

POLICY = """
version: 1
providers:
  qwen-cloud: {base_url: "https://dashscope-intl.aliyuncs.com/compatible-mode/v1", hosting: cloud, jurisdiction: sg,
               vendor: alibaba}
deployments:
  dep: {provider: qwen-cloud, model: qwen3.6-plus, PRICE}
  other: {provider: qwen-cloud, model: qwen-plus, price: {input_per_mtok: 1, output_per_mtok: 2}}
aliases:
  a: {targets: [dep, other]}
"""

# qwen3.6-plus in Model Studio's international regions (README "Price book" cites the sources)
QWEN36 = """price: {tiers: [
    {max_input_tokens: 256000, input_per_mtok: 0.5, output_per_mtok: 3.0, cached_input_per_mtok: 0.05,
     cache_write_per_mtok: 0.625},
    {input_per_mtok: 2.0, output_per_mtok: 6.0, cached_input_per_mtok: 0.2, cache_write_per_mtok: 2.5}]}"""


def table_of(price: str, extra: str = "") -> PolicyTable:
    return load_policy_text(POLICY.replace("PRICE", price + extra), {}, fx=FX)


def price_of(price: str) -> Price:
    return table_of(price).deployments["dep"].price


def problems_of(price: str) -> str:
    with pytest.raises(PolicyError) as caught:
        table_of(price)
    return str(caught.value)


def midnight(day: str) -> float:
    return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()


def test_the_tier_is_chosen_by_the_whole_input_and_bills_every_token_of_the_request() -> None:
    price = price_of(QWEN36)
    at_bound = charge(price, input_tokens=256_000, output_tokens=1_000)
    above = charge(price, input_tokens=256_001, output_tokens=1_000)
    assert at_bound.usd == pytest.approx((256_000 * 0.5 + 1_000 * 3.0) / 1e6, abs=1e-12)
    # one token more and the input, output and cache are all billed in the second tier
    assert above.usd == pytest.approx((256_001 * 2.0 + 1_000 * 6.0) / 1e6, abs=1e-12)


def test_cached_tokens_count_toward_the_tier_and_are_billed_at_that_tiers_cache_price() -> None:
    price = price_of(QWEN36)
    # 6,001 fresh + 250,000 read from cache: 256,001 in total, so the second tier, cache at its 0.2
    bill = charge(price, input_tokens=256_001, output_tokens=10, cached_tokens=250_000)
    assert bill.usd == pytest.approx((6_001 * 2.0 + 250_000 * 0.2 + 10 * 6.0) / 1e6, abs=1e-12)


def test_cache_writes_and_reads_are_priced_separately() -> None:
    price = price_of(QWEN36)
    bill = charge(price, input_tokens=10_000, output_tokens=0, cached_tokens=2_000, cache_write_tokens=3_000)
    assert bill.usd == pytest.approx((5_000 * 0.5 + 2_000 * 0.05 + 3_000 * 0.625) / 1e6, abs=1e-12)


def test_without_cache_prices_cached_and_written_tokens_cost_the_input_price() -> None:
    price = price_of("price: {input_per_mtok: 2, output_per_mtok: 8}")
    bill = charge(price, input_tokens=1_000, output_tokens=0, cached_tokens=400, cache_write_tokens=100)
    assert bill.usd == pytest.approx(1_000 * 2 / 1e6, abs=1e-12)


def test_a_request_that_reasoned_pays_the_thinking_output_price_for_all_its_output() -> None:
    price = price_of("price: {input_per_mtok: 0.8, output_per_mtok: 2, thinking_output_per_mtok: 8, currency: CNY}")
    plain = charge(price, input_tokens=1_000, output_tokens=500)
    thinking = charge(price, input_tokens=1_000, output_tokens=500, reasoning_tokens=300)
    assert (plain.amount, thinking.amount) == pytest.approx(((800 + 1_000) / 1e6, (800 + 4_000) / 1e6), abs=1e-12)
    assert thinking.currency == "CNY"
    assert thinking.usd == pytest.approx(thinking.amount * 0.14, abs=1e-12)


def test_dated_entries_apply_from_their_day_without_a_reload() -> None:
    book = """price: [
        {input_per_mtok: 1, output_per_mtok: 2},
        {effective_from: 2027-01-01, input_per_mtok: 3, output_per_mtok: 4, currency: EUR}]"""
    price = price_of(book)
    before, after = price.at(midnight("2026-12-31T23:59:59")), price.at(midnight("2027-01-01"))
    assert charge(before, input_tokens=1_000_000, output_tokens=0).usd == pytest.approx(1.0)
    assert (before.entry, after.entry) == ("policy[0]", "policy[1] from 2027-01-01")
    later = charge(after, input_tokens=1_000_000, output_tokens=1_000_000)
    assert (later.amount, later.currency) == (pytest.approx(7.0), "EUR")
    assert later.usd == pytest.approx(7.0 * 1.08)


def test_entries_are_ordered_by_date_whatever_order_they_are_written_in() -> None:
    book = """price: [
        {effective_from: 2027-06-01, input_per_mtok: 5, output_per_mtok: 5},
        {effective_from: 2026-01-01, input_per_mtok: 1, output_per_mtok: 1}]"""
    price = price_of(book)
    assert price.at(midnight("2026-03-01")).input_per_mtok_usd == 1
    assert price.at(midnight("2027-06-02")).input_per_mtok_usd == 5


def test_book_mistakes_name_their_path() -> None:
    unbounded_first = (
        "price: {tiers: [{input_per_mtok: 1, output_per_mtok: 1}, {input_per_mtok: 2, output_per_mtok: 2}]}"
    )
    assert "deployments.dep.price.tiers[0].max_input_tokens: only the last tier may leave it out" in problems_of(
        unbounded_first
    )
    descending = (
        "price: {tiers: [{max_input_tokens: 1000, input_per_mtok: 1, output_per_mtok: 1},"
        " {max_input_tokens: 500, input_per_mtok: 2, output_per_mtok: 2}]}"
    )
    assert "price.tiers[1].max_input_tokens: must be above the previous 1000" in problems_of(descending)
    mixed = "price: {input_per_mtok: 1, tiers: [{input_per_mtok: 1, output_per_mtok: 1}]}"
    assert "price.tiers: give the prices inside tiers, not beside them" in problems_of(mixed)
    twice = "price: [{input_per_mtok: 1, output_per_mtok: 1}, {input_per_mtok: 2, output_per_mtok: 2}]"
    assert "price[1].effective_from: two entries with no effective_from" in problems_of(twice)
    bad_currency = "price: [{input_per_mtok: 1, output_per_mtok: 1, currency: JPY}]"
    assert "price[0].currency: input should be 'USD', 'CNY' or 'EUR', not 'JPY'" in problems_of(bad_currency)


def test_retirement_warns_within_30_days_and_fails_from_the_day() -> None:
    table = table_of("price: {input_per_mtok: 1, output_per_mtok: 1}", ", retires_on: 2027-03-01, replaced_by: other")
    assert retirement_notes(table, date(2027, 1, 29)) == []
    (soon,) = retirement_notes(table, date(2027, 1, 30))
    assert not soon.failed
    assert soon.message == (
        "deployments.dep: qwen3.6-plus retires on 2027-03-01 (30 days); move its traffic to 'other'"
    )
    (gone,) = retirement_notes(table, date(2027, 3, 1))
    assert gone.failed and "retired on 2027-03-01" in gone.message


def test_replaced_by_must_name_another_deployment() -> None:
    assert "deployments.dep.replaced_by: unknown deployment 'nope'" in problems_of(
        "price: {input_per_mtok: 1, output_per_mtok: 1}, retires_on: 2027-03-01, replaced_by: nope"
    )


LITELLM_POLICY = """
version: 1
providers:
  ds: {type: litellm, litellm_prefix: dashscope, hosting: cloud, jurisdiction: sg, vendor: alibaba}
  gm: {type: litellm, litellm_prefix: gemini, hosting: cloud, jurisdiction: us, vendor: google}
deployments:
  max: {provider: ds, model: qwen3-max}
  pro: {provider: gm, model: gemini-2.5-pro}
aliases:
  a: {targets: [max, pro]}
"""


def test_litellms_tiered_prices_are_the_fallback_for_litellm_providers() -> None:
    table = load_policy_text(LITELLM_POLICY, {}, fx=FX)
    # read from litellm's bundled price map: dashscope/qwen3-max lists input ranges, gemini-2.5-pro a 200k bound
    qwen_max, gemini = table.deployments["max"].price, table.deployments["pro"].price
    assert (qwen_max.source, qwen_max.entry) == ("litellm", "litellm:dashscope/qwen3-max")
    assert [t.max_input_tokens for t in qwen_max.tiers] == [32000, 128000, 252000]
    above = charge(qwen_max, input_tokens=40_000, output_tokens=1_000)
    assert above.usd == pytest.approx((40_000 * qwen_max.tiers[1].input_per_mtok
                                       + 1_000 * qwen_max.tiers[1].output_per_mtok) / 1e6, abs=1e-12)
    assert [t.max_input_tokens for t in gemini.tiers] == [200_000, None]
    low, high = gemini.tiers
    assert high.input_per_mtok > low.input_per_mtok and high.cached_input_per_mtok is not None
    bill = charge(gemini, input_tokens=200_001, output_tokens=10, cached_tokens=100_000)
    expected = (100_001 * high.input_per_mtok + 100_000 * high.cached_input_per_mtok + 10 * high.output_per_mtok) / 1e6
    assert bill.usd == pytest.approx(expected, abs=1e-12)


def test_lowest_cost_orders_by_the_tier_a_prompt_selects() -> None:
    from gateway.policy.engine import decide
    from gateway.policy.plan import HealthSnapshot, RequestFacts

    text = POLICY.replace("PRICE", QWEN36).replace("[dep, other]", "[dep, other], strategy: lowest_cost")
    table = load_policy_text(text, {}, fx=FX)

    def first(prompt_tokens: int) -> str:
        facts = RequestFacts(alias="a", tenant="anonymous", endpoint="chat", stream=False, data_class=None,
                             tags=frozenset(), prompt_tokens=prompt_tokens, max_output_tokens=100, needs=frozenset())
        return decide(facts, table, HealthSnapshot()).attempts[0].name

    assert first(1_000) == "dep"  # 0.5 in / 3.0 out in the first tier against 1 / 2
    assert first(300_000) == "other"  # the whole request at 2.0 in / 6.0 out in the second tier


def test_a_gpu_hour_cost_in_cny_is_counted_in_cny() -> None:
    price = price_of("price: {gpu_hour: 20, tokens_per_second: 1000, currency: CNY}")
    bill = charge(price, input_tokens=3_000_000, output_tokens=600_000)
    per_mtok_cny = 20 / (1000 * 3600) * 1e6
    assert (bill.currency, bill.entry) == ("CNY", "gpu_hour")
    assert bill.amount == pytest.approx(3.6 * per_mtok_cny, abs=1e-12)
    assert bill.usd == pytest.approx(3.6 * per_mtok_cny * 0.14, abs=1e-12)


@pytest.mark.parametrize("book", [QWEN36, "price: {input_per_mtok: 0.8, output_per_mtok: 4.8, currency: CNY}",
                                  "price: {input_per_mtok: 3, output_per_mtok: 15}",
                                  "price: {gpu_hour: 2.5, tokens_per_second: 1200, currency: USD}"])
@pytest.mark.parametrize(("prompt", "output"), [(0, 0), (1, 256), (255_999, 32), (256_000, 1), (256_001, 4096),
                                                (1_000_000, 0), (-5, -1)])
def test_routings_text_estimate_is_exactly_what_the_bill_would_be(book: str, prompt: int, output: int) -> None:
    price = price_of(book)
    assert text_estimate(price, prompt, output) == charge(price, input_tokens=prompt, output_tokens=output).usd
