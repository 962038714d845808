"""Prices in USD: currency conversion, GPU-hour pricing, litellm's price map, and the cost of one request."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from gateway.policy.charges import charge
from gateway.policy.loader import load_policy_text
from gateway.policy.pricing import CurrencyRates
from gateway.policy.table import Price
from gateway.settings import Settings, prepare_litellm_environment

FX = CurrencyRates(usd_per_cny=0.14, usd_per_eur=1.08)

POLICY = """
version: 1
providers:
  cloud: {base_url: "https://api.example.com/v1", hosting: cloud, jurisdiction: us, vendor: example}
  claude: {type: litellm, litellm_prefix: anthropic, hosting: cloud, jurisdiction: us, vendor: anthropic}
deployments:
  dep: {provider: PROVIDER, model: MODEL, PRICE}
aliases:
  a: {targets: [dep]}
"""


def price_of(price: str, provider: str = "cloud", model: str = "m") -> Price:
    text = POLICY.replace("PROVIDER", provider).replace("MODEL", model)
    text = text.replace(", PRICE", f", price: {price}" if price else "")
    return load_policy_text(text, {}, fx=FX).deployments["dep"].price


def test_a_usd_token_price_is_taken_as_written() -> None:
    price = price_of("{input_per_mtok: 2.5, output_per_mtok: 10, cached_input_per_mtok: 1.25}")
    assert (price.input_per_mtok_usd, price.output_per_mtok_usd, price.cached_input_per_mtok_usd) == (2.5, 10.0, 1.25)
    assert (price.source, price.currency, price.entry) == ("policy", "USD", "policy")


def test_cny_and_eur_prices_are_converted_to_usd() -> None:
    cny = price_of("{input_per_mtok: 0.8, output_per_mtok: 4.8, cached_input_per_mtok: 0.2, currency: CNY}")
    assert cny.input_per_mtok_usd == pytest.approx(0.112)
    assert cny.output_per_mtok_usd == pytest.approx(0.672)
    assert cny.cached_input_per_mtok_usd == pytest.approx(0.028)
    assert cny.source == "policy"
    eur = price_of("{input_per_mtok: 1, output_per_mtok: 2, currency: EUR}")
    assert (eur.input_per_mtok_usd, eur.output_per_mtok_usd) == pytest.approx((1.08, 2.16))
    assert eur.cached_input_per_mtok_usd is None


def test_gpu_hour_price_is_spread_over_the_tokens_an_hour_serves() -> None:
    price = price_of("{gpu_hour: 2.50, tokens_per_second: 1200}")
    per_mtok = 2.50 / (1200 * 3600) * 1_000_000
    assert price.input_per_mtok_usd == pytest.approx(per_mtok)
    assert price.output_per_mtok_usd == pytest.approx(per_mtok)
    assert price.source == "gpu_hour"
    in_cny = price_of("{gpu_hour: 20, tokens_per_second: 1000, currency: CNY}")
    assert in_cny.input_per_mtok_usd == pytest.approx(20 * 0.14 / 3600 / 1000 * 1_000_000)


def test_a_litellm_provider_without_a_price_uses_litellms_price_map() -> None:
    prepare_litellm_environment()
    import litellm

    expected = litellm.model_cost["claude-sonnet-4-5"]
    price = price_of("", provider="claude", model="claude-sonnet-4-5")
    assert price.source == "litellm"
    assert price.input_per_mtok_usd == pytest.approx(expected["input_cost_per_token"] * 1e6)
    assert price.output_per_mtok_usd == pytest.approx(expected["output_cost_per_token"] * 1e6)
    assert price.cached_input_per_mtok_usd == pytest.approx(expected["cache_read_input_token_cost"] * 1e6)
    assert price.input_per_mtok_usd > 0


def test_a_model_litellm_does_not_know_has_an_unknown_price() -> None:
    price = price_of("", provider="claude", model="no-such-model-anywhere")
    assert price == Price(0.0, 0.0, source="unknown", entry="unknown")


def test_an_openai_provider_without_a_price_is_unknown_and_never_loads_litellm() -> None:
    # A fresh interpreter: whether litellm was imported is a process-wide fact.
    policy = POLICY.replace(", PRICE", "").replace("PROVIDER", "cloud")
    script = textwrap.dedent(
        f"""
        import sys
        from gateway.policy.loader import load_policy_text
        from gateway.policy.pricing import CurrencyRates
        table = load_policy_text({policy!r}, {{}}, fx=CurrencyRates())
        print(table.deployments["dep"].price.source, "litellm" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["unknown", "False"]


def test_request_cost() -> None:
    price = Price(input_per_mtok_usd=3.0, output_per_mtok_usd=15.0, cached_input_per_mtok_usd=0.3)
    assert charge(price, input_tokens=1_000_000, output_tokens=0).usd == pytest.approx(3.0)
    assert charge(price, input_tokens=1000, output_tokens=200).usd == pytest.approx((1000 * 3.0 + 200 * 15.0) / 1e6)
    # cached tokens are counted inside the input tokens (as OpenAI reports them) and billed at the cached price
    assert charge(price, input_tokens=5000, output_tokens=200, cached_tokens=4000).usd == pytest.approx(
        (1000 * 3.0 + 4000 * 0.3 + 200 * 15.0) / 1e6
    )


def test_cached_tokens_cost_the_input_price_without_a_cached_price() -> None:
    price = Price(input_per_mtok_usd=2.0, output_per_mtok_usd=8.0)
    assert charge(price, input_tokens=500_000, output_tokens=0, cached_tokens=500_000).usd == pytest.approx(1.0)


def test_rates_come_from_settings() -> None:
    settings = Settings(usd_per_cny=0.15, usd_per_eur=1.1)
    assert CurrencyRates.from_settings(settings) == CurrencyRates(usd_per_cny=0.15, usd_per_eur=1.1)
    assert CurrencyRates().to_usd(10, "CNY") == pytest.approx(10 * Settings.model_fields["usd_per_cny"].default)
