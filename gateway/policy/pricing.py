"""Deployment prices in USD per million tokens: from the policy, from a GPU-hour cost, or from litellm's price map."""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import orjson

from gateway.policy.schema import Currency, DeploymentSpec
from gateway.policy.table import Price, Provider
from gateway.settings import Settings

_PER_MTOK = 1_000_000
_PRICE_FILE = "model_prices_and_context_window_backup.json"


@dataclass(frozen=True)
class CurrencyRates:
    """How many US dollars one unit of each other policy currency is worth (prices are kept in USD)."""

    usd_per_cny: float = 0.14  # the same defaults as Settings (POLYROUTE_USD_PER_CNY / _EUR)
    usd_per_eur: float = 1.08

    @classmethod
    def from_settings(cls, settings: Settings) -> CurrencyRates:
        return cls(usd_per_cny=settings.usd_per_cny, usd_per_eur=settings.usd_per_eur)

    def to_usd(self, amount: float, currency: Currency) -> float:
        rate = {"USD": 1.0, "CNY": self.usd_per_cny, "EUR": self.usd_per_eur}[currency]
        return amount * rate


def resolve_price(deployment: DeploymentSpec, provider: Provider, fx: CurrencyRates) -> Price:
    """The deployment's USD price and where it came from (`policy`, `gpu_hour`, `litellm` or `unknown`).

    litellm's price map is consulted only for litellm-type providers: an OpenAI-compatible deployment without a
    price must not pull litellm (and its memory) into the process.
    """
    price = deployment.price
    if price is not None and price.input_per_mtok is not None and price.output_per_mtok is not None:
        cached = price.cached_input_per_mtok
        return Price(
            input_per_mtok_usd=fx.to_usd(price.input_per_mtok, price.currency),
            output_per_mtok_usd=fx.to_usd(price.output_per_mtok, price.currency),
            cached_input_per_mtok_usd=None if cached is None else fx.to_usd(cached, price.currency),
            source="policy",
        )
    if price is not None and price.gpu_hour is not None and price.tokens_per_second:
        # A GPU costs the same per hour whatever it generates; spread that over the tokens it can serve in one.
        per_mtok = fx.to_usd(price.gpu_hour, price.currency) / (price.tokens_per_second * 3600) * _PER_MTOK
        return Price(input_per_mtok_usd=per_mtok, output_per_mtok_usd=per_mtok, source="gpu_hour")
    if provider.type == "litellm" and provider.litellm_prefix:
        known = litellm_price(provider.litellm_prefix, deployment.model)
        if known is not None:
            return known
    return Price(input_per_mtok_usd=0.0, output_per_mtok_usd=0.0, source="unknown")


def litellm_price(prefix: str, model: str) -> Price | None:
    """Look `prefix/model`, then `model`, up in the price map that litellm ships as a data file.

    The file is read, not litellm imported: checking a policy stays fast, litellm stays in providers/litellm.py,
    and nothing is ever downloaded.
    """
    cost_map = _litellm_price_map()
    if not cost_map:
        return None
    candidates = [f"{prefix}/{model}", model]
    if model.startswith(f"{prefix}/"):
        candidates.append(model.removeprefix(f"{prefix}/"))
    for key in candidates:
        entry = cost_map.get(key)
        if not isinstance(entry, dict):
            continue
        input_cost = _per_mtok(entry.get("input_cost_per_token"))
        output_cost = _per_mtok(entry.get("output_cost_per_token"))
        if input_cost is not None and output_cost is not None:
            return Price(
                input_per_mtok_usd=input_cost,
                output_per_mtok_usd=output_cost,
                cached_input_per_mtok_usd=_per_mtok(entry.get("cache_read_input_token_cost")),
                source="litellm",
            )
    return None


def _per_mtok(per_token: object) -> float | None:
    if isinstance(per_token, bool) or not isinstance(per_token, int | float) or not math.isfinite(per_token):
        return None
    return round(per_token * _PER_MTOK, 9)  # 2.9e-06 * 1e6 is 2.9000000000000004 in binary floats


def estimate_cost_usd(price: Price, prompt_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
    """USD cost of one request.

    `prompt_tokens` are the input tokens billed at the input price; `cached_tokens` are counted separately (not
    included in `prompt_tokens`) and billed at the cached-input price when the deployment has one, else at the
    input price. OpenAI's usage counts cached tokens inside prompt_tokens: subtract them before calling.
    """
    cached_price = price.cached_input_per_mtok_usd
    if cached_price is None:
        cached_price = price.input_per_mtok_usd
    return (
        max(prompt_tokens, 0) * price.input_per_mtok_usd
        + max(cached_tokens, 0) * cached_price
        + max(output_tokens, 0) * price.output_per_mtok_usd
    ) / _PER_MTOK


@functools.cache
def _litellm_price_map() -> dict[str, object]:
    spec = importlib.util.find_spec("litellm")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / _PRICE_FILE
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
