"""What users write in a policy file (`version: 1`): pydantic models that deny unknown keys (read by parse_spec)."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Tag,
    field_validator,
    model_validator,
)

from gateway.error_classes import ErrorClass
from gateway.policy.durations import parse_duration
from gateway.policy.table import (
    CircuitBreakerPolicy,
    Engine,
    FallbackPolicy,
    Hosting,
    OnSaturation,
    Protocol,
    Retries,
    Spillover,
    Strategy,
    Timeouts,
)

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_HEADER_VALUE_BREAK = re.compile(r"[\r\n\0]")

UNION_TAG = "~"  # marks a tagged union's member in an error location: not part of the YAML path
Currency = Literal["USD", "CNY", "EUR"]

POLICY_VERSION = 1


def _http_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return url


def _as_list(value: object) -> object:
    """Let a list-valued field be written as one scalar: `data_class: pii` means `[pii]`."""
    return [value] if isinstance(value, str | int | float) else value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
StrList = Annotated[list[str], BeforeValidator(_as_list)]
Duration = Annotated[NonNegativeFloat, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[PositiveFloat, BeforeValidator(parse_duration)]


class SpecModel(BaseModel):
    """Base of every user-facing model: a key we do not know is a mistake, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ProviderSpec(SpecModel):
    type: Literal["openai", "litellm", "dashscope"] = "openai"  # dashscope: Model Studio's native image API
    base_url: HttpUrl | None = None
    api_key: str | None = Field(default=None, repr=False)
    hosting: Hosting
    jurisdiction: str
    vendor: str
    litellm_prefix: str | None = None
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    max_connections: PositiveInt = 200
    protocols: Annotated[list[Protocol], BeforeValidator(_as_list)] = Field(default_factory=lambda: [Protocol.CHAT])
    base_urls: dict[Literal["responses", "messages"], HttpUrl] = Field(default_factory=dict)
    engine: Engine = Engine.NONE
    metrics_url: HttpUrl | None = None  # default: the base URL's origin + /metrics
    poll: PositiveDuration = 0.25

    @field_validator("headers")
    @classmethod
    def _sendable_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name[:40]!r} is not a valid HTTP header name")
            if _HEADER_VALUE_BREAK.search(value):  # the value itself is a secret: never echoed
                raise ValueError(f"the value of header {name!r} contains a line break or NUL")
        return headers

    @model_validator(mode="after")
    def _one_kind_of_credentials(self) -> ProviderSpec:
        urls = [self.base_url, *self.base_urls.values()]
        if any(url is not None and urlsplit(url).username is not None for url in urls) and (
            self.api_key or any(name.lower() == "authorization" for name in self.headers)
        ):
            raise ValueError(
                "a base URL carries user:password (sent as basic authorization) and api_key or an authorization "
                "header is set too: give the credentials one way"
            )
        return self


class PriceTierSpec(SpecModel):
    """One band of a tiered price: it applies to a request whose total input tokens (cached included) are at most
    `max_input_tokens`; the last band has no bound."""

    max_input_tokens: PositiveInt | None = None
    input_per_mtok: NonNegativeFloat
    output_per_mtok: NonNegativeFloat
    cached_input_per_mtok: NonNegativeFloat | None = None
    cache_write_per_mtok: NonNegativeFloat | None = None
    thinking_output_per_mtok: NonNegativeFloat | None = None


class PriceSpec(SpecModel):
    """A token price (`input_per_mtok` + `output_per_mtok`, or `tiers`) or a GPU cost (`gpu_hour` +
    `tokens_per_second`); in a list of prices, each entry applies from its `effective_from` date (UTC)."""

    input_per_mtok: NonNegativeFloat | None = None
    output_per_mtok: NonNegativeFloat | None = None
    cached_input_per_mtok: NonNegativeFloat | None = None
    cache_write_per_mtok: NonNegativeFloat | None = None
    thinking_output_per_mtok: NonNegativeFloat | None = None
    tiers: list[PriceTierSpec] | None = None
    gpu_hour: NonNegativeFloat | None = None
    tokens_per_second: PositiveFloat | None = None
    # Audio: tokens of audio (Omni) at their own prices, not also at the text price; speech-to-text per second of
    # input audio, text-to-speech per million characters of input.
    audio_input_per_mtok: NonNegativeFloat | None = None
    audio_output_per_mtok: NonNegativeFloat | None = None
    per_second: NonNegativeFloat | None = None
    per_mchar: NonNegativeFloat | None = None
    currency: Currency = "USD"
    effective_from: date | None = None
    # Image deployments: a price per image returned, flat or by size and/or quality (`1024x1024`, `hd`,
    # `1024x1024/hd`, `default`).
    per_image: NonNegativeFloat | dict[str, NonNegativeFloat] | None = None


def _price_shape(value: object) -> str:
    return f"{UNION_TAG}book" if isinstance(value, list) else f"{UNION_TAG}entry"


# One price, or a book of dated entries; the tag picks the shape so an error names only the shape written (the tag
# is dropped from the error's YAML path).
PriceBookSpec = Annotated[
    Annotated[PriceSpec, Tag(f"{UNION_TAG}entry")] | Annotated[list[PriceSpec], Tag(f"{UNION_TAG}book")],
    Discriminator(_price_shape),
]


class ThinkingSpec(SpecModel):
    """A deployment's `thinking:` block: what its model accepts (Model Studio's deep-thinking page lists it)."""

    default: bool | None = None  # on: thinks unless told not to; off: only when asked
    stream_only: bool = False
    max_budget: PositiveInt | None = None
    preserve: bool = False


class DeploymentSpec(SpecModel):
    provider: str
    model: str
    context_window: PositiveInt | None = None
    price: PriceBookSpec | None = None  # left out: litellm's price map (litellm providers only)
    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    capabilities: StrList = Field(default_factory=list)
    max_output_tokens: PositiveInt | None = None
    thinking: ThinkingSpec | None = None
    retires_on: date | None = None  # the vendor's announced retirement date (UTC)
    replaced_by: str | None = None  # the deployment to move to before then
    kind: Literal["chat", "image", "transcription", "speech"] = "chat"  # the endpoints it serves
    image_api: Literal["async", "sync"] | None = None  # dashscope images; left out: chosen by the model name


_SPILL = Spillover()


class LoadMarkSpec(SpecModel):
    queue: NonNegativeFloat | None = None  # waiting requests per replica
    kv: Annotated[float, Field(ge=0, le=1)] | None = None  # KV-cache use, 0-1


class SpilloverSpec(SpecModel):
    high: LoadMarkSpec = Field(default_factory=LoadMarkSpec)
    low: LoadMarkSpec = Field(default_factory=LoadMarkSpec)
    dwell: Duration = _SPILL.dwell_s
    max_wait: Duration = _SPILL.max_wait_s
    balance: NonNegativeFloat = _SPILL.balance


class ShadowSpec(SpecModel):
    """Shadow evaluation: copies of sampled requests go to other deployments, compared with the primary's answer."""

    targets: StrList
    sample: Annotated[float, Field(gt=0.0, le=1.0)] = 0.05
    max_concurrency: PositiveInt = 4
    budget_usd_per_day: NonNegativeFloat = 5.0
    record: str | None = None  # a JSONL file of compared pairs (never for sensitive data classes)


class AliasSpec(SpecModel):
    targets: StrList
    strategy: Strategy = Strategy.PRIORITY
    weights: list[PositiveFloat] | None = None
    critical: bool = False  # `polyroute drill` fails when this alias would lose traffic without a vendor
    tiers: list[StrList] | None = None  # spillover: default self-hosted targets, then cloud ones
    spillover: SpilloverSpec | None = None
    on_saturation: OnSaturation | None = None
    shadow: ShadowSpec | None = None

    @model_validator(mode="after")
    def _spillover_keys_need_spillover(self) -> AliasSpec:
        if self.strategy is not Strategy.SPILLOVER:
            given = [k for k in ("tiers", "spillover", "on_saturation") if getattr(self, k) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to `strategy: spillover`")
        return self


class RangeSpec(SpecModel):
    gt: NonNegativeInt | None = None
    gte: NonNegativeInt | None = None
    lt: NonNegativeInt | None = None
    lte: NonNegativeInt | None = None


class WhenSpec(SpecModel):
    data_class: StrList | None = None
    tenant: StrList | None = None
    alias: StrList | None = None
    tags: StrList | None = None  # any of
    prompt_tokens: RangeSpec | None = None
    stream: bool | None = None


class RequireSpec(SpecModel):
    hosting: Hosting | None = None
    jurisdiction: StrList | None = None
    jurisdiction_not: StrList = Field(default_factory=list)
    vendor: StrList | None = None
    vendor_not: StrList = Field(default_factory=list)
    deployments: StrList | None = None
    min_context_window: PositiveInt | None = None


class RuleSpec(SpecModel):
    name: str
    when: WhenSpec = Field(default_factory=WhenSpec)
    require: RequireSpec | None = None
    route: str | None = None


_RETRIES, _TIMEOUTS, _BREAKER = Retries(), Timeouts(), CircuitBreakerPolicy()


class RetriesSpec(SpecModel):
    attempts: NonNegativeInt = _RETRIES.attempts
    backoff: Duration = _RETRIES.backoff_s
    max_backoff: Duration = _RETRIES.max_backoff_s


class TimeoutsSpec(SpecModel):
    """`connect`: the TCP connect. `first_token`: a stream's first SSE event (non-stream answers have none, so only
    connect and total apply to them). `total`: the whole request, the stream's last byte included."""

    connect: PositiveDuration = _TIMEOUTS.connect_s
    first_token: PositiveDuration = _TIMEOUTS.first_token_s
    total: PositiveDuration = _TIMEOUTS.total_s


class CircuitBreakerSpec(SpecModel):
    failures: PositiveInt = _BREAKER.failures
    window: PositiveDuration = _BREAKER.window_s
    cooldown: PositiveDuration = _BREAKER.cooldown_s


def _default_fallback_on() -> list[ErrorClass]:
    return sorted((ErrorClass(value) for value in FallbackPolicy().on), key=lambda c: c.value)


class FallbackSpec(SpecModel):
    on: Annotated[list[ErrorClass], BeforeValidator(_as_list)] = Field(default_factory=_default_fallback_on)
    retries: RetriesSpec = Field(default_factory=RetriesSpec)
    timeouts: TimeoutsSpec = Field(default_factory=TimeoutsSpec)
    circuit_breaker: CircuitBreakerSpec = Field(default_factory=CircuitBreakerSpec)


class LimitsSpec(SpecModel):
    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None


class BudgetSpec(SpecModel):
    usd_per_day: NonNegativeFloat | None = None
    usd_per_month: NonNegativeFloat | None = None


class TenantSpec(SpecModel):
    api_keys: list[str] = Field(default_factory=list, repr=False)  # plaintext or `sha256:<64 hex>`
    models: StrList | None = None  # aliases allowed; None = all
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    anonymous: bool = False


class PolicySpec(SpecModel):
    """A whole policy file as written (after `${VAR}` expansion)."""

    version: Literal[1] = 1
    providers: dict[str, ProviderSpec] = Field(default_factory=dict)
    deployments: dict[str, DeploymentSpec] = Field(default_factory=dict)
    aliases: dict[str, AliasSpec] = Field(default_factory=dict)
    rules: list[RuleSpec] = Field(default_factory=list)
    fallback: FallbackSpec = Field(default_factory=FallbackSpec)
    tenants: dict[str, TenantSpec] = Field(default_factory=dict)
    # Data classes whose prompt and completion text are never recorded outside the request (shadow records, traces).
    sensitive_data_classes: StrList = Field(default_factory=list)
