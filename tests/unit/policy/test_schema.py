"""The policy schema: unknown keys, types, choices and durations are reported at their YAML path."""

from __future__ import annotations

import pytest

from gateway.errors import PolicyError
from gateway.policy.durations import format_duration, parse_duration
from gateway.policy.loader import describe_policy, load_policy_text
from gateway.policy.pricing import CurrencyRates
from gateway.policy.table import FallbackPolicy, Hosting, PolicyTable, Strategy, Thinking

FX = CurrencyRates(usd_per_cny=0.14, usd_per_eur=1.08)

PROVIDERS = """
version: 1
providers:
  gpu-pool: {type: openai, base_url: "http://127.0.0.1:8000/v1", hosting: self_hosted, jurisdiction: onprem,
             vendor: self}
deployments:
  qwen-local: {provider: gpu-pool, model: Qwen/Qwen3-32B, context_window: 32768,
               price: {gpu_hour: 2.5, tokens_per_second: 1200}}
aliases:
  local: {targets: [qwen-local]}
"""


def load(text: str) -> PolicyTable:
    return load_policy_text(text, {}, fx=FX)


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load(text)
    return caught.value.problems


def test_a_minimal_policy_gets_the_documented_defaults() -> None:
    table = load(PROVIDERS)
    assert table.aliases["local"].strategy is Strategy.PRIORITY
    assert table.fallback == FallbackPolicy()
    assert table.providers["gpu-pool"].max_connections == 200
    assert table.rules == ()
    assert table.open_access


def test_unknown_key_names_its_path() -> None:
    text = """
version: 1
providers:
  gpu-pool: {type: openai, base_ulr: "http://127.0.0.1:8000/v1", hosting: self_hosted, jurisdiction: onprem,
             vendor: self}
"""
    found = problems(text)
    assert "providers.gpu-pool.base_ulr: unknown key" in found
    assert "providers.gpu-pool.base_url: required for an openai provider" in found


def test_unknown_top_level_key() -> None:
    assert problems(PROVIDERS + "tenantz: {}\n") == ["tenantz: unknown key"]


def test_missing_required_field() -> None:
    text = PROVIDERS.replace("hosting: self_hosted, ", "")
    assert problems(text) == ["providers.gpu-pool.hosting: required"]


def test_a_bad_choice_names_the_choices_and_what_was_written() -> None:
    text = PROVIDERS.replace("price: {gpu_hour: 2.5, tokens_per_second: 1200}", "price: {gpu_hour: 2.5, currency: JPY}")
    found = problems(text)
    assert "deployments.qwen-local.price.currency: input should be 'USD', 'CNY' or 'EUR', not 'JPY'" in found
    text = PROVIDERS.replace("targets: [qwen-local]", "targets: [qwen-local], strategy: random")
    assert problems(text) == [
        "aliases.local.strategy: input should be 'priority', 'weighted', 'lowest_cost', 'lowest_latency', "
        "'least_busy' or 'spillover', not 'random'"
    ]


def test_wrong_types_name_the_path() -> None:
    text = PROVIDERS.replace("context_window: 32768", "context_window: lots")
    assert problems(text) == [
        "deployments.qwen-local.context_window: input should be a valid integer, unable to parse string as an integer"
    ]
    text = PROVIDERS + "rules:\n  - {name: r, when: {data_class: {pii: true}}, require: {hosting: self_hosted}}\n"
    assert problems(text) == ["rules[0].when.data_class: expected a list"]
    assert problems(PROVIDERS.replace("targets: [qwen-local]", "targets: [qwen-local, 7]")) == [
        "aliases.local.targets[1]: expected a string"
    ]


def test_a_list_field_accepts_one_scalar() -> None:
    text = PROVIDERS + """
rules:
  - name: pii-stays-home
    when: {data_class: pii, tenant: [team-a, team-b], stream: true, prompt_tokens: {gte: 10, lt: 100}}
    require: {hosting: self_hosted, jurisdiction_not: cn}
"""
    rule = load(text).rules[0]
    assert rule.when.data_class == frozenset({"pii"})
    assert rule.when.tenant == frozenset({"team-a", "team-b"})
    assert rule.when.stream is True
    assert rule.when.prompt_tokens is not None and rule.when.prompt_tokens.contains(10)
    assert rule.require is not None and rule.require.jurisdiction_not == frozenset({"cn"})
    assert rule.require.hosting is Hosting.SELF_HOSTED


def test_version_must_be_1() -> None:
    assert problems(PROVIDERS.replace("version: 1", "version: 2")) == [
        "version: unsupported policy version 2 (this gateway reads version 1)"
    ]
    assert problems(PROVIDERS.replace("version: 1", "")) == ["version: required"]


def test_yaml_1_1_booleans_stay_strings() -> None:
    """`on:` (fallback) must stay a key and `no` (Norway) a jurisdiction, not True and False."""
    text = PROVIDERS.replace("jurisdiction: onprem", "jurisdiction: no") + "fallback:\n  on: [rate_limit]\n"
    table = load(text)
    assert table.providers["gpu-pool"].jurisdiction == "no"
    assert table.fallback.on == frozenset({"rate_limit"})


def test_fallback_durations_and_error_classes() -> None:
    text = PROVIDERS + """
fallback:
  on: rate_limit
  retries: {attempts: 3, backoff: 150ms, max_backoff: 1.5s}
  timeouts: {connect: 1, first_token: 1m, total: 1h}
  circuit_breaker: {failures: 3, window: 10s, cooldown: 2m}
"""
    fallback = load(text).fallback
    assert fallback.on == frozenset({"rate_limit"})
    assert (fallback.retries.attempts, fallback.retries.backoff_s, fallback.retries.max_backoff_s) == (3, 0.15, 1.5)
    assert (fallback.timeouts.connect_s, fallback.timeouts.first_token_s, fallback.timeouts.total_s) == (1, 60, 3600)
    assert (fallback.circuit_breaker.window_s, fallback.circuit_breaker.cooldown_s) == (10, 120)


def test_account_and_spent_quota_fail_over_by_default_and_can_be_named() -> None:
    assert {"account", "quota_exhausted"} <= load(PROVIDERS).fallback.on
    named = load(PROVIDERS + "fallback:\n  on: [account, quota_exhausted, timeout]\n").fallback.on
    assert named == frozenset({"account", "quota_exhausted", "timeout"})


def test_a_deployments_thinking_block() -> None:
    text = PROVIDERS.replace(
        "price: {gpu_hour: 2.5, tokens_per_second: 1200}}",
        "price: {gpu_hour: 2.5, tokens_per_second: 1200},\n"
        "               thinking: {default: on, stream_only: true, max_budget: 38912, preserve: true}}",
    )
    assert load(text).deployments["qwen-local"].thinking == Thinking(
        default_on=True, stream_only=True, max_budget=38912, preserve=True
    )
    assert load(text.replace("default: on", "default: off")).deployments["qwen-local"].thinking == Thinking(
        default_on=False, stream_only=True, max_budget=38912, preserve=True
    )
    assert load(PROVIDERS).deployments["qwen-local"].thinking is None
    assert "thinking: default on, stream only, max budget 38,912, preserve" in describe_policy(load(text))
    found = problems(text.replace("max_budget: 38912", "max_budget: 0, budget: 5"))
    assert found == [
        "deployments.qwen-local.thinking.max_budget: input should be greater than 0",
        "deployments.qwen-local.thinking.budget: unknown key",
    ]


def test_bad_fallback_values_name_their_paths() -> None:
    text = PROVIDERS + """
fallback:
  on: [rate_limit, oops]
  retries: {backoff: 2x}
  timeouts: {connect: 0s}
"""
    found = problems(text)
    assert found[0].startswith("fallback.on[1]: input should be 'rate_limit', 'timeout', ")
    assert found[0].endswith(", not 'oops'")
    assert found[1].startswith("fallback.retries.backoff: bad duration '2x' (use seconds, or a number followed by ms")
    assert found[2] == "fallback.timeouts.connect: input should be greater than 0"


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("200ms", 0.2), ("2s", 2.0), ("1.5s", 1.5), ("5m", 300.0), ("1h", 3600.0), (3, 3.0), (0.25, 0.25), ("10", 10.0)],
)
def test_durations(written: object, seconds: float) -> None:
    assert parse_duration(written) == pytest.approx(seconds)


@pytest.mark.parametrize("written", ["2x", "-1s", "", "ms", "1.5.2s", True, None, [1], float("inf"), -3])
def test_bad_durations_say_what_is_accepted(written: object) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(written)


def test_durations_are_shown_the_way_they_are_written() -> None:
    shown = [format_duration(s) for s in (0.2, 2.0, 1.5, 300.0, 3600.0, 90.0)]
    assert shown == ["200ms", "2s", "1.5s", "5m", "1h", "90s"]


def test_prices_need_one_complete_form() -> None:
    both = PROVIDERS.replace("tokens_per_second: 1200", "tokens_per_second: 1200, input_per_mtok: 1")
    assert problems(both) == [
        "deployments.qwen-local.price: "
        "give either input_per_mtok/output_per_mtok or gpu_hour/tokens_per_second, not both"
    ]
    half = PROVIDERS.replace("price: {gpu_hour: 2.5, tokens_per_second: 1200}", "price: {input_per_mtok: 1}")
    assert problems(half) == ["deployments.qwen-local.price.output_per_mtok: required with input_per_mtok"]
    empty = PROVIDERS.replace("price: {gpu_hour: 2.5, tokens_per_second: 1200}", "price: {currency: EUR}")
    assert problems(empty) == [
        "deployments.qwen-local.price: give input_per_mtok and output_per_mtok, tiers, or gpu_hour and "
        "tokens_per_second"
    ]


def test_names_must_be_safe_for_headers_and_labels() -> None:
    text = PROVIDERS + "  'my alias': {targets: [qwen-local]}\n"
    assert problems(text) == [
        "aliases.my alias: a name may use letters, digits and . _ - : / @ + (starting with a letter or digit)"
    ]


def test_secret_values_never_appear_in_errors() -> None:
    text = PROVIDERS + """
tenants:
  team-a: {api_keys: [{key: sk-team-a-secret}]}
"""
    found = problems(text.replace("vendor: self}", "vendor: self, api_key: {k: sk-provider-secret}}"))
    assert found == ["providers.gpu-pool.api_key: expected a string", "tenants.team-a.api_keys[0]: expected a string"]
    assert not any("secret" in problem for problem in found)


def test_provider_headers_that_would_break_the_request_are_refused_without_echoing_them() -> None:
    bad_value = PROVIDERS.replace("vendor: self}", "vendor: self, headers: {x-org: \"sk-org-secret\\r\\nx-admin: 1\"}}")
    bad_name = PROVIDERS.replace("vendor: self}", "vendor: self, headers: {\"x org\": v}}")
    found = problems(bad_value) + problems(bad_name)
    assert len(found) == 2
    assert found[0].startswith("providers.gpu-pool.headers: ") and "line break" in found[0]
    assert found[1].startswith("providers.gpu-pool.headers: ") and "not a valid HTTP header name" in found[1]
    assert not any("secret" in problem for problem in found)


def test_credentials_in_a_base_url_and_an_api_key_together_are_refused() -> None:
    with_user = PROVIDERS.replace("http://127.0.0.1:8000/v1", "http://gw:pw-secret@127.0.0.1:8000/v1")
    assert load(with_user).providers["gpu-pool"].base_url == "http://gw:pw-secret@127.0.0.1:8000/v1"
    found = problems(with_user.replace("vendor: self}", "vendor: self, api_key: sk-key-secret}"))
    assert len(found) == 1 and found[0].startswith("providers.gpu-pool: ") and "one way" in found[0]
    assert "secret" not in found[0]


def test_every_problem_is_reported_at_once() -> None:
    text = """
version: 1
bogus: 1
providers:
  gpu-pool: {base_url: "ftp://x", hosting: somewhere, jurisdiction: onprem, vendor: self}
deployments:
  qwen-plus: {provider: qwen-cloud, model: m, price: {input_per_mtok: 1, output_per_mtok: 2, currency: JPY}}
aliases:
  coder: {targets: [qwen-plus, qwen-lcoal]}
rules:
  - {name: r1, route: nowhere}
"""
    assert problems(text) == [
        "bogus: unknown key",
        "providers.gpu-pool.base_url: must be an http:// or https:// URL",
        "providers.gpu-pool.hosting: input should be 'cloud' or 'self_hosted', not 'somewhere'",
        "deployments.qwen-plus.price.currency: input should be 'USD', 'CNY' or 'EUR', not 'JPY'",
        "deployments.qwen-plus.provider: unknown provider 'qwen-cloud'",
        "aliases.coder.targets[1]: unknown deployment 'qwen-lcoal'",
        "rules[0].route: unknown alias 'nowhere'",
    ]
