"""What one request costs under a price book entry: the tier its input selects, cache reads and writes, thinking."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.policy.table import Price, PriceTier

_PER_MTOK = 1_000_000


@dataclass(slots=True)  # one per request: a frozen dataclass costs several times as much to build
class Charge:
    """One request's cost in US dollars and in the price's own currency, and the price entry it came from."""

    usd: float
    amount: float
    currency: str
    entry: str


def tier_for(price: Price, input_tokens: int) -> PriceTier:
    """The band a request with `input_tokens` in total (cached and cache writes included) is billed at."""
    for tier in price.tiers:
        if tier.max_input_tokens is None or input_tokens <= tier.max_input_tokens:
            return tier
    if price.tiers:
        return price.tiers[-1]  # a book whose every band is bounded: bill beyond the last bound at the last band
    return PriceTier(
        None, price.input_per_mtok_usd, price.output_per_mtok_usd, price.cached_input_per_mtok_usd
    )


def text_estimate(price: Price, input_tokens: int, output_tokens: int) -> float:
    """USD of one request of only text tokens, none cached or reasoned: what `charge` gives for those counts, without
    its general bill. Routing estimates every target of every request with it (`charge` is for what was used)."""
    total_in = max(input_tokens, 0)
    tier = tier_for(price, total_in)
    amount = (total_in * tier.input_per_mtok + max(output_tokens, 0) * tier.output_per_mtok) / _PER_MTOK
    return amount * price.usd_per_unit if price.tiers else amount


def charge(
    price: Price,
    *,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    reasoning_tokens: int = 0,
    requests: int = 1,
    audio_input_tokens: int = 0,
    audio_output_tokens: int = 0,
    audio_seconds: float = 0.0,
    characters: int = 0,
    images: int = 0,
    image_variant: str = "",
) -> Charge:
    """The cost of `requests` requests whose usage counts cache reads and writes inside `input_tokens` (as OpenAI
    and Model Studio report them) and reasoning inside `output_tokens`.

    The tier is chosen by the input of one request (the mean, when `requests` sums several). Cache reads and writes
    are billed at their own prices where the tier has them, else as input; when the request reasoned and the tier
    has a thinking-mode output price, all its output is billed at it (Model Studio prices a thinking request's
    output, not only its reasoning tokens, at the thinking rate). Audio tokens, counted inside input and output
    (as Model Studio's Omni reports them: the audio split is a detail of the totals), are billed at the audio prices
    where the tier has them and then not again at the text price. Seconds of input audio (transcription) and
    characters of input text (speech) are billed at `per_second` and `per_mchar`.
    """
    total_in = max(input_tokens, 0)
    tier = tier_for(price, total_in if requests <= 1 else -(-total_in // requests))
    cached = min(max(cached_tokens, 0), total_in)
    written = min(max(cache_write_tokens, 0), total_in - cached)
    fresh = total_in - cached - written
    total_out = max(output_tokens, 0)
    audio_in = audio_out = 0.0  # the audio part of the bill
    if tier.audio_input_per_mtok is not None and audio_input_tokens > 0:
        moved = min(audio_input_tokens, fresh)
        fresh -= moved
        audio_in = moved * tier.audio_input_per_mtok
    if tier.audio_output_per_mtok is not None and audio_output_tokens > 0:
        moved = min(audio_output_tokens, total_out)
        total_out -= moved
        audio_out = moved * tier.audio_output_per_mtok
    output_price = tier.output_per_mtok
    if reasoning_tokens > 0 and tier.thinking_output_per_mtok is not None:
        output_price = tier.thinking_output_per_mtok
    cached_price = tier.input_per_mtok if tier.cached_input_per_mtok is None else tier.cached_input_per_mtok
    write_price = tier.input_per_mtok if tier.cache_write_per_mtok is None else tier.cache_write_per_mtok
    amount = (
        fresh * tier.input_per_mtok
        + cached * cached_price
        + written * write_price
        + total_out * output_price
        + audio_in
        + audio_out
        + max(characters, 0) * tier.per_mchar
    ) / _PER_MTOK + max(audio_seconds, 0.0) * tier.per_second
    if images > 0 and price.per_image:
        usd = images * image_price_usd(price, image_variant)
        return Charge(usd=amount * price.usd_per_unit + usd, amount=amount + usd / price.usd_per_unit,
                      currency=price.currency, entry=price.entry or price.source)
    if not price.tiers:  # the `*_usd` fields: already US dollars
        return Charge(usd=amount, amount=amount, currency="USD", entry=price.entry or price.source)
    return Charge(
        usd=amount * price.usd_per_unit, amount=amount, currency=price.currency, entry=price.entry or price.source
    )


def image_price_usd(price: Price, variant: str) -> float:
    """USD for one image asked at `variant` (`<size>/<quality>`, either part may be empty): the entry for both, else
    for the size, else for the quality, else `default`; a book that lists none of them bills its highest price, so
    that an image is never billed below what the policy says one may cost."""
    prices = dict(price.per_image)
    size, _, quality = variant.lower().partition("/")
    for key in (f"{size}/{quality}", size, quality, "default"):
        if key and key in prices:
            return prices[key]
    return max(prices.values(), default=0.0)
