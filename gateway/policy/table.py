"""The compiled, frozen runtime table that the engine routes on (what the YAML becomes after validation)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum


class Hosting(StrEnum):
    CLOUD = "cloud"
    SELF_HOSTED = "self_hosted"


class Protocol(StrEnum):
    """A client protocol: what a client speaks to polyroute, and what a provider may speak natively."""

    CHAT = "chat"  # OpenAI Chat Completions (and legacy completions, embeddings): every provider speaks it
    RESPONSES = "responses"  # OpenAI Responses
    MESSAGES = "messages"  # Anthropic Messages


class Strategy(StrEnum):
    PRIORITY = "priority"
    WEIGHTED = "weighted"
    LOWEST_COST = "lowest_cost"
    LOWEST_LATENCY = "lowest_latency"
    LEAST_BUSY = "least_busy"
    SPILLOVER = "spillover"


class Engine(StrEnum):
    """The inference server behind a self-hosted provider: which Prometheus metrics tell its load."""

    VLLM = "vllm"
    SGLANG = "sglang"
    LLAMACPP = "llamacpp"
    TGI = "tgi"
    OLLAMA = "ollama"  # no Prometheus metrics: polyroute's own in-flight count
    NONE = "none"


METRICLESS_ENGINES = frozenset({Engine.OLLAMA, Engine.NONE})


class OnSaturation(StrEnum):
    """What a spill-over request does when every tier it may use is saturated (say a pii request)."""

    QUEUE = "queue"  # wait a bounded time for the tier to drain, then 503 with Retry-After
    REJECT = "reject"  # 429 with Retry-After at once


@dataclass(frozen=True)
class Provider:
    """Where models are served: an OpenAI-compatible base URL, or a litellm provider prefix."""

    name: str
    type: str  # "openai" | "litellm"
    hosting: Hosting
    jurisdiction: str
    vendor: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    litellm_prefix: str | None = None
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    max_connections: int = 200
    protocols: frozenset[Protocol] = frozenset({Protocol.CHAT})
    native_urls: tuple[tuple[Protocol, str], ...] = ()  # the URL each non-chat protocol is POSTed to
    engine: Engine = Engine.NONE
    metrics_url: str | None = None  # polled for the engine's load; None when the engine has no metrics to read
    poll_s: float = 0.25

    def native_url(self, protocol: Protocol) -> str | None:
        """Where this provider serves `protocol` natively; None when requests must be translated to chat."""
        return next((url for p, url in self.native_urls if p is protocol), None)


@dataclass(frozen=True)
class PriceTier:
    """One band of a price book entry, in the entry's own currency per million tokens.

    Model Studio's rule: the band is chosen by the request's total input tokens (cached included) and every token of
    that request is billed at it; `max_input_tokens` None is the unbounded last band.
    """

    max_input_tokens: int | None
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None  # cache reads; None: billed as input
    cache_write_per_mtok: float | None = None  # cache writes; None: billed as input
    thinking_output_per_mtok: float | None = None  # all output of a request that reasoned; None: the output price
    audio_input_per_mtok: float | None = None  # audio tokens (inside the input); None: billed as input
    audio_output_per_mtok: float | None = None  # audio tokens (inside the output); None: billed as output
    per_second: float = 0.0  # of input audio (transcription)
    per_mchar: float = 0.0  # per million characters of input text (speech)


@dataclass(frozen=True)
class Price:
    """A deployment's price. The `*_usd` fields (first band, converted to USD) order and describe deployments;
    `tiers`, in `currency`, are what a request is charged. `later` holds the dated entries that follow this one."""

    input_per_mtok_usd: float
    output_per_mtok_usd: float
    cached_input_per_mtok_usd: float | None = None
    source: str = "policy"  # "policy" | "litellm" | "gpu_hour" | "unknown"
    tiers: tuple[PriceTier, ...] = ()  # empty: one unbounded band from the `*_usd` fields, in USD
    currency: str = "USD"
    usd_per_unit: float = 1.0  # the conversion rate of `currency` at load time
    effective_from: float = 0.0  # POSIX time (UTC midnight of the entry's date) from which this entry applies
    entry: str = ""  # names the price entry a recorded cost used, e.g. `policy[1] from 2027-01-01`
    later: tuple[Price, ...] = ()  # the entries that replace this one, by ascending `effective_from`
    # `per_image` in USD, by size and/or quality (`1024x1024`, `hd`, `1024x1024/hd`) or `default`; empty: none.
    per_image: tuple[tuple[str, float], ...] = ()

    def at(self, now: float) -> Price:
        """The entry in force at POSIX time `now`."""
        current = self
        for entry in self.later:
            if entry.effective_from > now:
                break
            current = entry
        return current


@dataclass(frozen=True)
class Thinking:
    """How a Qwen deployment's thinking must be asked for (Model Studio refuses what does not fit, with a 400)."""

    default_on: bool | None = None  # the model thinks unless sent `enable_thinking: false` (Qwen3.5/3.6 hybrids)
    stream_only: bool = False  # thinking only on streamed calls: a non-stream call must send `enable_thinking: false`
    max_budget: int | None = None  # the largest `thinking_budget` the model accepts
    preserve: bool = False  # earlier turns' reasoning is read only with `preserve_thinking: true`


@dataclass(frozen=True)
class Deployment:
    """One model on one provider."""

    name: str
    provider: Provider
    model: str
    context_window: int | None
    price: Price
    rpm: int | None = None
    tpm: int | None = None
    capabilities: frozenset[str] = frozenset()  # e.g. tools, vision; empty = unknown, assume yes
    max_output_tokens: int | None = None
    thinking: Thinking | None = None  # None: requests are translated without per-model thinking rules
    retires_on: date | None = None  # the vendor retires the model on this day (UTC)
    replaced_by: str | None = None
    kind: str = "chat"  # chat | image | transcription | speech: which endpoints it serves
    image_api: str | None = None  # a dashscope image deployment: `async` (task API) or `sync`


@dataclass(frozen=True)
class LoadMark:
    """A load level: waiting requests per replica and KV-cache use (0-1); a tier is above it when either is."""

    queue: float
    kv: float


@dataclass(frozen=True)
class Spillover:
    """`strategy: spillover`: leave a tier above `high`, come back once it stayed under `low` for `dwell_s`."""

    high: LoadMark = LoadMark(queue=4, kv=0.9)
    low: LoadMark = LoadMark(queue=1, kv=0.7)
    dwell_s: float = 10.0
    on_saturation: OnSaturation = OnSaturation.QUEUE
    max_wait_s: float = 5.0  # `queue`: how long a request may wait for its tier to drain
    balance: float = 0.25  # affinity: no replica above (1 + balance) x the average load


@dataclass(frozen=True)
class Shadow:
    """An alias's shadow evaluation: which deployments get copies of which share of its requests, within what."""

    targets: tuple[str, ...]
    sample: float
    max_concurrency: int
    budget_usd_per_day: float
    record: str | None = None


@dataclass(frozen=True)
class Alias:
    """A name clients send as `model`, resolving to ordered targets and a strategy."""

    name: str
    targets: tuple[str, ...]
    strategy: Strategy
    weights: tuple[float, ...] = ()
    critical: bool = False  # a vendor drill fails when it would lose traffic
    tiers: tuple[tuple[str, ...], ...] = ()  # spillover only: every target in exactly one tier, first tier first
    spillover: Spillover | None = None
    shadow: Shadow | None = None
    kind: str = "chat"  # the kind every target shares (a policy that mixes kinds does not load)


@dataclass(frozen=True)
class IntRange:
    gt: int | None = None
    gte: int | None = None
    lt: int | None = None
    lte: int | None = None

    def contains(self, value: int) -> bool:
        return (
            (self.gt is None or value > self.gt)
            and (self.gte is None or value >= self.gte)
            and (self.lt is None or value < self.lt)
            and (self.lte is None or value <= self.lte)
        )


@dataclass(frozen=True)
class Condition:
    """A rule's `when`: every given field must match (fields left out match anything)."""

    data_class: frozenset[str] | None = None
    tenant: frozenset[str] | None = None
    alias: frozenset[str] | None = None
    tags_any: frozenset[str] | None = None
    prompt_tokens: IntRange | None = None
    stream: bool | None = None


@dataclass(frozen=True)
class Requirement:
    """A rule's `require`: hard constraints a deployment must meet; never relaxed by fallback."""

    hosting: Hosting | None = None
    jurisdiction: frozenset[str] | None = None
    jurisdiction_not: frozenset[str] = frozenset()
    vendor: frozenset[str] | None = None
    vendor_not: frozenset[str] = frozenset()
    deployments: frozenset[str] | None = None
    min_context_window: int | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    when: Condition
    require: Requirement | None = None
    route: str | None = None  # an alias whose targets replace the requested alias's (first matching wins)


@dataclass(frozen=True)
class Retries:
    attempts: int = 2
    backoff_s: float = 0.2
    max_backoff_s: float = 2.0


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 2.0
    first_token_s: float = 15.0
    total_s: float = 300.0


@dataclass(frozen=True)
class CircuitBreakerPolicy:
    failures: int = 5
    window_s: float = 30.0
    cooldown_s: float = 30.0


@dataclass(frozen=True)
class FallbackPolicy:
    on: frozenset[str] = frozenset(
        {
            "rate_limit",
            "timeout",
            "server_error",
            "connection_error",
            "context_window",
            "content_policy",
            "auth",
            "account",
            "quota_exhausted",
            "retired",
        }
    )
    retries: Retries = Retries()
    timeouts: Timeouts = Timeouts()
    circuit_breaker: CircuitBreakerPolicy = CircuitBreakerPolicy()


@dataclass(frozen=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True)
class Budget:
    usd_per_day: float | None = None
    usd_per_month: float | None = None


@dataclass(frozen=True)
class Tenant:
    name: str
    key_hashes: frozenset[str] = field(repr=False)  # sha256 hex of every accepted key
    models: frozenset[str] | None  # None = every alias
    limits: Limits = Limits()
    budget: Budget = Budget()
    anonymous: bool = False


ANONYMOUS_TENANT = "anonymous"


def hash_api_key(key: str) -> str:
    """The sha256 hex a client key is stored and looked up as; plaintext keys never enter the table."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PolicyTable:
    """Everything the server routes on; swapped whole on reload, never mutated."""

    providers: dict[str, Provider]
    deployments: dict[str, Deployment]
    aliases: dict[str, Alias]
    rules: tuple[Rule, ...]
    fallback: FallbackPolicy
    tenants: dict[str, Tenant]
    source: str = "<embedded>"
    key_index: dict[str, str] = field(default_factory=dict, repr=False)  # sha256 hex of a key -> tenant name
    sensitive_data_classes: frozenset[str] = frozenset()  # their text is never recorded (shadow files, traces)

    def __post_init__(self) -> None:
        if not self.key_index and self.tenants:
            index = {key_hash: t.name for t in self.tenants.values() for key_hash in t.key_hashes}
            object.__setattr__(self, "key_index", index)  # frozen: derived once, at construction

    @property
    def open_access(self) -> bool:
        """No tenants declared: every caller is one anonymous tenant, with any or no key."""
        return not self.tenants

    def tenant_for_key_hash(self, key_hash: str) -> Tenant | None:
        name = self.key_index.get(key_hash)
        return None if name is None else self.tenants.get(name)

    def anonymous_tenant(self) -> Tenant | None:
        if self.open_access:
            return Tenant(name=ANONYMOUS_TENANT, key_hashes=frozenset(), models=None, anonymous=True)
        for tenant in self.tenants.values():
            if tenant.anonymous:
                return tenant
        return None
