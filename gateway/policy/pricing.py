"""Deployment price books: from the policy (tiers, dated entries), a GPU-hour cost, or litellm's price map."""

from __future__ import annotations

import functools
import importlib.util
import math
import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from pathlib import Path

import orjson

from gateway.policy.schema import Currency, DeploymentSpec, PriceSpec
from gateway.policy.table import Price, PriceTier, Provider
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
    """The deployment's price book and where it came from (`policy`, `gpu_hour`, `litellm` or `unknown`).

    A list of prices is a book of dated entries: each applies from its `effective_from` (UTC midnight), so an
    announced change takes effect on its day without a reload; the earliest entry also applies before its date.
    litellm's price map is consulted only for litellm-type providers: an OpenAI-compatible deployment without a
    price must not pull litellm (and its memory) into the process.
    """
    spec = deployment.price
    if isinstance(spec, list):
        dated = sorted(enumerate(spec), key=lambda item: _day_start(item[1].effective_from))
        book = [_entry_price(entry, f"policy[{index}]", fx) for index, entry in dated]
        if book:
            return replace(book[0], later=tuple(book[1:]))
    elif spec is not None:
        return _entry_price(spec, "policy", fx)
    if provider.type == "litellm" and provider.litellm_prefix:
        known = litellm_price(provider.litellm_prefix, deployment.model)
        if known is not None:
            return known
    return Price(input_per_mtok_usd=0.0, output_per_mtok_usd=0.0, source="unknown", entry="unknown")


def _entry_price(spec: PriceSpec, label: str, fx: CurrencyRates) -> Price:
    """One price book entry, as validated by policy checks (a token price, tiers, a GPU cost, a price per image)."""
    price = _token_price(spec, label, fx)
    if spec.per_image is None:
        return price
    rate = fx.to_usd(1.0, spec.currency)
    given = spec.per_image if isinstance(spec.per_image, dict) else {IMAGE_PRICE_DEFAULT: spec.per_image}
    return replace(price, per_image=tuple((key.lower(), usd * rate) for key, usd in given.items()))


IMAGE_PRICE_DEFAULT = "default"


def _token_price(spec: PriceSpec, label: str, fx: CurrencyRates) -> Price:
    rate = fx.to_usd(1.0, spec.currency)
    since = _day_start(spec.effective_from)
    entry = f"{label} from {spec.effective_from.isoformat()}" if spec.effective_from else label
    if spec.gpu_hour is not None and spec.tokens_per_second:
        # A GPU costs the same per hour whatever it generates; spread that over the tokens it can serve in one.
        per_mtok = spec.gpu_hour / (spec.tokens_per_second * 3600) * _PER_MTOK
        return Price(
            input_per_mtok_usd=per_mtok * rate,
            output_per_mtok_usd=per_mtok * rate,
            source="gpu_hour",
            tiers=(PriceTier(max_input_tokens=None, input_per_mtok=per_mtok, output_per_mtok=per_mtok),),
            currency=spec.currency,
            usd_per_unit=rate,
            effective_from=since,
            entry=entry if entry != "policy" else "gpu_hour",
        )
    tiers = tuple(
        PriceTier(
            max_input_tokens=t.max_input_tokens,
            input_per_mtok=t.input_per_mtok,
            output_per_mtok=t.output_per_mtok,
            cached_input_per_mtok=t.cached_input_per_mtok,
            cache_write_per_mtok=t.cache_write_per_mtok,
            thinking_output_per_mtok=t.thinking_output_per_mtok,
        )
        for t in spec.tiers or ()
    ) or (
        PriceTier(
            max_input_tokens=None,
            input_per_mtok=spec.input_per_mtok or 0.0,
            output_per_mtok=spec.output_per_mtok or 0.0,
            cached_input_per_mtok=spec.cached_input_per_mtok,
            cache_write_per_mtok=spec.cache_write_per_mtok,
            thinking_output_per_mtok=spec.thinking_output_per_mtok,
        ),
    )
    if _has_audio_prices(spec):
        tiers = tuple(
            replace(
                t, audio_input_per_mtok=spec.audio_input_per_mtok, audio_output_per_mtok=spec.audio_output_per_mtok,
                per_second=spec.per_second or 0.0, per_mchar=spec.per_mchar or 0.0,
            )
            for t in tiers
        )
    first = tiers[0]
    cached = first.cached_input_per_mtok
    return Price(
        input_per_mtok_usd=first.input_per_mtok * rate,
        output_per_mtok_usd=first.output_per_mtok * rate,
        cached_input_per_mtok_usd=None if cached is None else cached * rate,
        source="policy",
        tiers=tiers,
        currency=spec.currency,
        usd_per_unit=rate,
        effective_from=since,
        entry=entry,
    )


def _has_audio_prices(spec: PriceSpec) -> bool:
    """Audio prices apply to every band of the entry (Model Studio prices audio tokens apart from text tokens)."""
    units = (spec.audio_input_per_mtok, spec.audio_output_per_mtok, spec.per_second, spec.per_mchar)
    return any(v is not None for v in units)


def _day_start(day: date | None) -> float:
    """POSIX time of UTC midnight starting `day` (0 for an entry without a date: in force from the start)."""
    if day is None:
        return 0.0
    return datetime.combine(day, time.min, tzinfo=UTC).timestamp()


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
        tiers = _litellm_tiers(entry)
        if tiers:
            first = tiers[0]
            return Price(
                input_per_mtok_usd=first.input_per_mtok,
                output_per_mtok_usd=first.output_per_mtok,
                cached_input_per_mtok_usd=first.cached_input_per_mtok,
                source="litellm",
                tiers=tiers,
                entry=f"litellm:{key}",
            )
    return None


_ABOVE = re.compile(r"^input_cost_per_token_above_(\d+)k_tokens$")


def _litellm_tiers(entry: dict[str, object]) -> tuple[PriceTier, ...]:
    """The bands of one price map entry: its `tiered_pricing` list (input ranges, as for dashscope/qwen3-max), or
    a base price and the `*_above_<N>k_tokens` prices that replace it above N thousand input tokens (Gemini)."""
    ranges = entry.get("tiered_pricing")
    if isinstance(ranges, list) and ranges:
        tiers = [_litellm_tier(band, "", _range_end(band)) for band in ranges if isinstance(band, dict)]
        if tiers and all(t is not None for t in tiers):
            return tuple(t for t in tiers if t is not None)
    above = sorted(int(m[1]) for key in entry if (m := _ABOVE.match(key)))
    if not above:
        base = _litellm_tier(entry, "", None)
        return () if base is None else (base,)
    base = _litellm_tier(entry, "", above[0] * 1000)
    higher = [
        _litellm_tier(entry, f"_above_{k}k_tokens", above[i + 1] * 1000 if i + 1 < len(above) else None)
        for i, k in enumerate(above)
    ]
    bands = [base, *higher]
    return tuple(t for t in bands if t is not None) if all(t is not None for t in bands) else ()


def _range_end(band: dict[str, object]) -> int | None:
    span = band.get("range")
    if isinstance(span, list) and len(span) == 2 and isinstance(span[1], int | float) and math.isfinite(span[1]):
        return int(span[1])
    return None


def _litellm_tier(entry: dict[str, object], suffix: str, max_input_tokens: int | None) -> PriceTier | None:
    input_cost = _per_mtok(entry.get(f"input_cost_per_token{suffix}"))
    output_cost = _per_mtok(entry.get(f"output_cost_per_token{suffix}"))
    if input_cost is None or output_cost is None:
        return None
    return PriceTier(
        max_input_tokens=max_input_tokens,
        input_per_mtok=input_cost,
        output_per_mtok=output_cost,
        cached_input_per_mtok=_per_mtok(entry.get(f"cache_read_input_token_cost{suffix}")),
        cache_write_per_mtok=_per_mtok(entry.get(f"cache_creation_input_token_cost{suffix}")),
    )


def _per_mtok(per_token: object) -> float | None:
    if isinstance(per_token, bool) or not isinstance(per_token, int | float) or not math.isfinite(per_token):
        return None
    return round(per_token * _PER_MTOK, 9)  # 2.9e-06 * 1e6 is 2.9000000000000004 in binary floats


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
