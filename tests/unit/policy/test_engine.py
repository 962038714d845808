"""The routing engine: eligibility first (rules, context window, capabilities, circuits), then strategy order."""

from __future__ import annotations

import pytest

from gateway.errors import AllCircuitsOpenError, NoEligibleTargetError, NotFoundError, PermissionDeniedError
from gateway.policy.engine import decide
from gateway.policy.loader import load_policy_text
from gateway.policy.plan import HealthSnapshot, RequestFacts
from gateway.policy.pricing import CurrencyRates
from gateway.policy.table import PolicyTable

POLICY = """
version: 1
providers:
  cloud-sg: {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: cloud, jurisdiction: sg, vendor: alibaba}
  cloud-cn: {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: cloud, jurisdiction: cn, vendor: alibaba}
  gpu:      {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: self_hosted, jurisdiction: onprem, vendor: self}
deployments:
  qwen-plus:  {provider: cloud-sg, model: qwen3.6-plus, context_window: 1000000,
               price: {input_per_mtok: 0.8, output_per_mtok: 4.8, currency: CNY}}
  qwen-cn:    {provider: cloud-cn, model: qwen3.6-plus, context_window: 1000000,
               price: {input_per_mtok: 0.4, output_per_mtok: 2.4, currency: CNY}}
  qwen-local: {provider: gpu, model: Qwen/Qwen3-32B, context_window: 32768,
               price: {gpu_hour: 2.5, tokens_per_second: 1200, currency: USD}, capabilities: [tools]}
aliases:
  coder:  {targets: [qwen-plus, qwen-local], strategy: priority}
  cheap:  {targets: [qwen-plus, qwen-cn, qwen-local], strategy: lowest_cost}
  mixed:  {targets: [qwen-local, qwen-plus], strategy: weighted, weights: [3, 1]}
  fast:   {targets: [qwen-plus, qwen-local], strategy: lowest_latency}
  idle:   {targets: [qwen-plus, qwen-local], strategy: least_busy}
  local:  {targets: [qwen-local], strategy: priority}
rules:
  - name: pii-stays-home
    when: {data_class: [pii, confidential]}
    require: {hosting: self_hosted}
  - name: long-prompts-to-cloud
    when: {prompt_tokens: {gt: 30000}}
    require: {min_context_window: 100000}
  - name: team-b-no-cn
    when: {tenant: team-b}
    require: {jurisdiction_not: [cn]}
  - name: batch-goes-local
    when: {tags: [batch]}
    route: local
"""


@pytest.fixture(scope="module")
def table() -> PolicyTable:
    return load_policy_text(POLICY, {}, fx=CurrencyRates(usd_per_cny=0.14, usd_per_eur=1.08))


def facts(alias: str = "coder", **kw: object) -> RequestFacts:
    return RequestFacts(alias=alias, tenant=str(kw.pop("tenant", "team-a")), **kw)  # type: ignore[arg-type]


def names(plan: object) -> list[str]:
    return [d.name for d in plan.attempts]  # type: ignore[attr-defined]


def test_priority_keeps_listed_order(table: PolicyTable) -> None:
    plan = decide(facts(prompt_tokens=10), table, HealthSnapshot())
    assert names(plan) == ["qwen-plus", "qwen-local"]
    assert plan.route == "alias:coder"


def test_pii_is_kept_on_self_hosted_and_trace_names_the_rule(table: PolicyTable) -> None:
    plan = decide(facts(data_class="pii"), table, HealthSnapshot())
    assert names(plan) == ["qwen-local"]
    assert plan.excluded[0].deployment == "qwen-plus"
    assert "rule pii-stays-home" in plan.excluded[0].reason
    assert any("pii-stays-home" in line for line in plan.trace)


def test_hard_constraint_is_never_relaxed(table: PolicyTable) -> None:
    """A pii request whose prompt is too long for the only self-hosted target gets a 400, not the cloud."""
    with pytest.raises(NoEligibleTargetError) as info:
        decide(facts(data_class="pii", prompt_tokens=40000), table, HealthSnapshot())
    message = info.value.message
    assert "qwen-plus: excluded by rule pii-stays-home" in message
    assert "qwen-local: excluded by rule long-prompts-to-cloud" in message
    assert info.value.status == 400


def test_context_window_excludes_small_models(table: PolicyTable) -> None:
    plan = decide(facts(prompt_tokens=31000, max_output_tokens=4000), table, HealthSnapshot())
    assert names(plan) == ["qwen-plus"]


def test_a_prompt_too_long_for_every_target_is_context_length_exceeded(table: PolicyTable) -> None:
    """Said as upstreams say it, so clients compact (Claude Code) or stop retrying (the openai SDK)."""
    with pytest.raises(NoEligibleTargetError) as info:
        decide(facts("local", prompt_tokens=30000, max_output_tokens=4000), table, HealthSnapshot())
    assert (info.value.status, info.value.code, info.value.context_window) == (400, "context_length_exceeded", 32768)
    assert "qwen-local: excluded by context window (32768 tokens < ~34000 needed)" in info.value.message


def test_a_rule_beside_a_too_small_window_is_still_a_prompt_too_long(table: PolicyTable) -> None:
    """qwen-plus is ruled out whatever the prompt; the only target left is too small for it."""
    with pytest.raises(NoEligibleTargetError) as info:
        decide(facts(data_class="pii", prompt_tokens=30000, max_output_tokens=4000), table, HealthSnapshot())
    assert (info.value.code, info.value.context_window) == ("context_length_exceeded", 32768)


def test_an_open_circuit_beside_a_too_small_window_is_not_a_prompt_too_long(table: PolicyTable) -> None:
    """The open circuit's target could take the prompt once it closes: no reason to shorten it."""
    health = HealthSnapshot(open_circuits=frozenset({"qwen-plus"}))
    with pytest.raises(NoEligibleTargetError) as info:
        decide(facts(prompt_tokens=30000, max_output_tokens=4000), table, health)
    assert info.value.code != "context_length_exceeded"


def test_tenant_rule_excludes_jurisdiction(table: PolicyTable) -> None:
    plan = decide(facts("cheap", tenant="team-b"), table, HealthSnapshot())
    assert "qwen-cn" not in names(plan)
    plan = decide(facts("cheap", tenant="team-a"), table, HealthSnapshot())
    assert "qwen-cn" in names(plan)


def test_lowest_cost_orders_by_estimated_price(table: PolicyTable) -> None:
    plan = decide(facts("cheap", prompt_tokens=1000, max_output_tokens=100), table, HealthSnapshot())
    costs = [plan.estimated_cost_usd[n] for n in names(plan)]
    assert costs == sorted(costs)
    # 0.4/2.4 CNY (x0.14) and 0.8/4.8 CNY per Mtok against 2.5 USD/h at 1200 tok/s (~0.58 USD per Mtok)
    assert names(plan) == ["qwen-cn", "qwen-plus", "qwen-local"]
    assert plan.estimated_cost_usd["qwen-cn"] == pytest.approx(1000 * 0.056e-6 + 100 * 0.336e-6)
    assert plan.estimated_cost_usd["qwen-local"] == pytest.approx(1100 * 2.5 / (1200 * 3600))


def test_weighted_first_pick_follows_weights(table: PolicyTable) -> None:
    firsts = [
        names(decide(facts("mixed"), table, HealthSnapshot(random_seed=i / 1000.0 + 0.0001)))[0]
        for i in range(1000)
    ]
    share = firsts.count("qwen-local") / len(firsts)
    assert 0.68 < share < 0.82  # weights 3:1 -> 75%


def test_lowest_latency_prefers_faster_and_unmeasured(table: PolicyTable) -> None:
    slow_cloud = HealthSnapshot(latency_ewma_s={"qwen-plus": 0.9, "qwen-local": 0.1})
    assert names(decide(facts("fast"), table, slow_cloud)) == ["qwen-local", "qwen-plus"]
    unmeasured = HealthSnapshot(latency_ewma_s={"qwen-local": 0.1})
    assert names(decide(facts("fast"), table, unmeasured))[0] == "qwen-plus"


def test_least_busy_prefers_fewer_in_flight(table: PolicyTable) -> None:
    busy = HealthSnapshot(inflight={"qwen-plus": 7, "qwen-local": 2})
    assert names(decide(facts("idle"), table, busy)) == ["qwen-local", "qwen-plus"]


def test_open_circuit_is_skipped_and_shown(table: PolicyTable) -> None:
    plan = decide(facts(), table, HealthSnapshot(open_circuits=frozenset({"qwen-plus"})))
    assert names(plan) == ["qwen-local"]
    assert any("qwen-plus: excluded by circuit open" in line for line in plan.trace)


def test_all_circuits_open_is_a_503(table: PolicyTable) -> None:
    with pytest.raises(AllCircuitsOpenError) as info:
        decide(facts("local"), table, HealthSnapshot(open_circuits=frozenset({"qwen-local"})))
    assert info.value.status == 503


def test_capabilities_filter(table: PolicyTable) -> None:
    plan = decide(facts(needs=frozenset({"vision"})), table, HealthSnapshot())
    assert names(plan) == ["qwen-plus"]  # qwen-local declares only tools; qwen-plus declares nothing (unknown)


def test_route_rule_replaces_targets(table: PolicyTable) -> None:
    plan = decide(facts(tags=frozenset({"batch"})), table, HealthSnapshot())
    assert plan.route == "batch-goes-local"
    assert names(plan) == ["qwen-local"]


def test_unknown_alias_is_404_and_disallowed_is_403(table: PolicyTable) -> None:
    with pytest.raises(NotFoundError):
        decide(facts("gpt-nope"), table, HealthSnapshot())
    with pytest.raises(PermissionDeniedError) as info:
        decide(facts(allowed_aliases=frozenset({"cheap"})), table, HealthSnapshot())
    assert info.value.status == 403
