"""What users write in a policy file (`version: 1`): pydantic models that deny unknown keys, validated per entry."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Literal, TypeVar
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
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from gateway.errors import ErrorClass
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
    hash_api_key,
)

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_HEADER_VALUE_BREAK = re.compile(r"[\r\n\0]")

Loc = tuple[str | int, ...]
_UNION_TAG = "~"  # marks a tagged union's member in an error location: not part of the YAML path
Currency = Literal["USD", "CNY", "EUR"]

POLICY_VERSION = 1


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy, at a YAML path; `file` is set when a directory of files was merged."""

    loc: Loc
    message: str
    file: str | None = None

    def render(self) -> str:
        where = format_loc(self.loc)
        text = f"{where}: {self.message}" if where else self.message
        return f"{self.file}: {text}" if self.file else text


def format_loc(loc: Loc) -> str:
    """`("aliases", "coder", "targets", 1)` -> `aliases.coder.targets[1]`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


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
    return f"{_UNION_TAG}book" if isinstance(value, list) else f"{_UNION_TAG}entry"


# One price, or a book of dated entries; the tag picks the shape so an error names only the shape written (the tag
# is dropped from the error's YAML path).
PriceBookSpec = Annotated[
    Annotated[PriceSpec, Tag(f"{_UNION_TAG}entry")] | Annotated[list[PriceSpec], Tag(f"{_UNION_TAG}book")],
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


SECTIONS: tuple[str, ...] = tuple(PolicySpec.model_fields)

_FRIENDLY = {
    "missing": "required",
    "extra_forbidden": "unknown key",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
    "string_type": "expected a string",
}


def error_message(error: ErrorDetails) -> str:
    """pydantic's message for one error, reworded for someone editing YAML.

    The value written is repeated only for a choice among names (`enum`, `literal_error`): other values may be
    secrets (keys, headers) and never appear in an error.
    """
    friendly = _FRIENDLY.get(error["type"])
    if friendly is not None:
        return friendly
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message = message[:1].lower() + message[1:]
    written = error.get("input")
    if error["type"] in ("enum", "literal_error") and isinstance(written, str | int | float) and len(str(written)) < 64:
        message += f", not {written!r}"
    return message


def version_problem(value: object) -> str | None:
    """Why `version: value` cannot be read, or None when it is the version this gateway speaks."""
    if value is None:
        return "required"
    if isinstance(value, bool) or value != POLICY_VERSION:
        return f"unsupported policy version {value!r} (this gateway reads version {POLICY_VERSION})"
    return None


Model = TypeVar("Model", bound=SpecModel)


def validate_entry(model: type[Model], raw: object, loc: Loc, problems: list[Problem]) -> Model | None:
    """Validate one entry, recording each error at its full YAML path.

    An invalid entry is still returned, without its bad keys, when what is left is valid: the cross-entry checks
    then see its references too (`deployments.x.provider` is checked even if `deployments.x.price` is wrong).
    Such an entry always comes with a problem, so it is never compiled.
    """
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
    problems.extend(Problem(loc + _yaml_path(err["loc"]), error_message(err)) for err in errors)
    bad = {err["loc"][0] for err in errors if err["loc"]}
    if not isinstance(raw, Mapping) or not bad:
        return None
    try:
        return model.model_validate({key: value for key, value in raw.items() if key not in bad})
    except ValidationError:
        return None


def _yaml_path(loc: tuple[str | int, ...]) -> Loc:
    return tuple(part for part in loc if not (isinstance(part, str) and part.startswith(_UNION_TAG)))


def _section(
    tree: Mapping[str, object], name: str, model: type[Model], problems: list[Problem]
) -> dict[str, Model]:
    raw = tree.get(name)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(Problem((name,), "expected a mapping of names to entries"))
        return {}
    valid: dict[str, Model] = {}
    for key, entry in raw.items():
        spec = validate_entry(model, {} if entry is None else entry, (name, str(key)), problems)
        if spec is not None:
            valid[str(key)] = spec
    return valid


@dataclass(frozen=True)
class ParsedPolicy:
    """The valid part of a policy and every problem found so far, with what the cross-entry checks need."""

    spec: PolicySpec  # compile it only when there are no problems: it may hold entries stripped of bad keys
    problems: tuple[Problem, ...]
    rule_index: tuple[int, ...]  # the position in the file of each of spec.rules (unreadable rules are left out)
    names: Mapping[str, tuple[str, ...]]  # every name written in each named section, in file order, valid or not


def parse_policy(tree: object) -> ParsedPolicy:
    """Validate every entry of a parsed (and env-expanded) policy tree, one entry at a time.

    One bad entry does not hide another's problems, and cross-entry checks (gateway.policy.checks) later
    compare references against every name written, so one typo is reported once.
    """
    if not isinstance(tree, Mapping):
        message = "a policy must be a YAML mapping with `version: 1` at the top"
        return ParsedPolicy(PolicySpec(), (Problem((), message),), (), {})
    problems = [Problem((str(key),), "unknown key") for key in tree if key not in SECTIONS]
    version = version_problem(tree.get("version"))
    if version is not None:
        problems.append(Problem(("version",), version))
    rules: dict[int, RuleSpec] = {}
    raw_rules = tree.get("rules")
    if isinstance(raw_rules, list):
        for index, raw in enumerate(raw_rules):
            rule = validate_entry(RuleSpec, raw, ("rules", index), problems)
            if rule is not None:
                rules[index] = rule
    elif raw_rules is not None:
        problems.append(Problem(("rules",), "expected a list of rules"))
    raw_fallback = tree.get("fallback")
    fallback = validate_entry(FallbackSpec, {} if raw_fallback is None else raw_fallback, ("fallback",), problems)
    spec = PolicySpec(
        providers=_section(tree, "providers", ProviderSpec, problems),
        deployments=_section(tree, "deployments", DeploymentSpec, problems),
        aliases=_section(tree, "aliases", AliasSpec, problems),
        rules=list(rules.values()),
        fallback=fallback or FallbackSpec(),
        tenants=_section(tree, "tenants", TenantSpec, problems),
        sensitive_data_classes=_sensitive(tree.get("sensitive_data_classes"), problems),
    )
    names = {section: _names(tree.get(section)) for section in NAMED_SECTIONS}
    return ParsedPolicy(spec, tuple(problems), tuple(rules), names)


NAMED_SECTIONS = ("providers", "deployments", "aliases", "tenants")


class _SensitiveSpec(SpecModel):
    sensitive_data_classes: StrList = Field(default_factory=list)


def _sensitive(raw: object, problems: list[Problem]) -> list[str]:
    """`sensitive_data_classes`: the data classes whose request text polyroute never records (files, traces)."""
    given = validate_entry(_SensitiveSpec, {} if raw is None else {"sensitive_data_classes": raw}, (), problems)
    return given.sensitive_data_classes if given is not None else []


def _names(section: object) -> tuple[str, ...]:
    return tuple(str(key) for key in section) if isinstance(section, Mapping) else ()


_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def key_hash(entry: str) -> str:
    """The stored form of one `api_keys` entry: plaintext is hashed, `sha256:<hex>` is taken as is."""
    if entry.startswith("sha256:"):
        digest = entry.removeprefix("sha256:")
        if not _SHA256.match(digest):
            raise ValueError("'sha256:' must be followed by 64 hex digits")
        return digest.lower()
    if not entry:
        raise ValueError("empty key (did an environment variable expand to nothing?)")
    return hash_api_key(entry)
