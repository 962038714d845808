"""Strategy spillover: tier order from the load snapshot, rules still deciding, affinity with bounded load."""

from __future__ import annotations

from collections import Counter

import pytest

from gateway.errors import LimitExceededError
from gateway.policy.engine import decide
from gateway.policy.loader import load_policy_text
from gateway.policy.plan import AliasLoad, EngineLoad, HealthSnapshot, LoadSnapshot, RequestFacts
from gateway.policy.pricing import CurrencyRates
from gateway.policy.table import OnSaturation, PolicyTable
from gateway.policy.trace_load import TierSaturatedError

POLICY = """
version: 1
providers:
  gpu-a: {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: self_hosted, jurisdiction: onprem, vendor: self,
          engine: vllm}
  gpu-b: {type: openai, base_url: "http://127.0.0.1:10/v1", hosting: self_hosted, jurisdiction: onprem, vendor: self,
          engine: sglang, metrics_url: "http://127.0.0.1:11/stats/metrics", poll: 100ms}
  cloud-sg: {type: openai, base_url: "http://127.0.0.1:12/v1", hosting: cloud, jurisdiction: sg, vendor: alibaba}
  cloud-us: {type: openai, base_url: "http://127.0.0.1:13/v1", hosting: cloud, jurisdiction: us, vendor: openai}
deployments:
  local-a: {provider: gpu-a, model: qwen3-32b}
  local-b: {provider: gpu-b, model: qwen3-32b}
  plus-sg: {provider: cloud-sg, model: qwen3.6-plus}
  plus-us: {provider: cloud-us, model: gpt-5}
aliases:
  chat:   {targets: [plus-sg, local-a, local-b, plus-us], strategy: spillover}
  strict: {targets: [local-a, plus-sg], strategy: spillover, on_saturation: reject,
           spillover: {high: {queue: 2}, low: {queue: 0, kv: 0.5}, dwell: 30s}}
  tiered: {targets: [local-a, local-b, plus-sg], strategy: spillover, tiers: [[local-a], [local-b], [plus-sg]]}
  prompt: {targets: [local-a, local-b, plus-sg], strategy: spillover, spillover: {high: {queue: 0}, low: {queue: 0}}}
rules:
  - name: pii-stays-home
    when: {data_class: [pii]}
    require: {hosting: self_hosted}
"""


@pytest.fixture(scope="module")
def table() -> PolicyTable:
    return load_policy_text(POLICY, {}, fx=CurrencyRates())


def facts(alias: str = "chat", **kw: object) -> RequestFacts:
    return RequestFacts(alias=alias, tenant="t", **kw)  # type: ignore[arg-type]


def load(
    alias: str,
    tier: int,
    saturated: frozenset[int] = frozenset(),
    roomy: frozenset[int] = frozenset(),
    **engines: EngineLoad,
) -> LoadSnapshot:
    state = AliasLoad(active_tier=tier, saturated=saturated, roomy=roomy)
    return LoadSnapshot(engines=dict(engines), aliases={alias: state})


def names(table: PolicyTable, f: RequestFacts, snap: LoadSnapshot, health: HealthSnapshot | None = None) -> list[str]:
    return [d.name for d in decide(f, table, health or HealthSnapshot(), snap).attempts]


def test_the_policy_compiles_tiers_defaults_and_metrics_urls(table: PolicyTable) -> None:
    chat = table.aliases["chat"]
    assert chat.tiers == (("local-a", "local-b"), ("plus-sg", "plus-us"))  # self-hosted first, then cloud
    assert chat.spillover is not None and chat.spillover.high.queue == 4 and chat.spillover.high.kv == 0.9
    assert chat.spillover.low.queue == 1 and chat.spillover.dwell_s == 10.0
    assert chat.spillover.on_saturation is OnSaturation.QUEUE
    strict = table.aliases["strict"].spillover
    assert strict is not None and strict.high.kv == 0.9 and strict.low.kv == 0.5 and strict.dwell_s == 30.0
    assert table.providers["gpu-a"].metrics_url == "http://127.0.0.1:9/metrics"  # the base URL's origin
    assert table.providers["gpu-b"].metrics_url == "http://127.0.0.1:11/stats/metrics"
    assert table.providers["gpu-b"].poll_s == 0.1
    assert table.providers["cloud-sg"].metrics_url is None


@pytest.mark.parametrize(
    ("alias_yaml", "problem"),
    [
        ("{targets: [local-a], strategy: priority, tiers: [[local-a]]}", "tiers only apply to `strategy: spillover`"),
        ("{targets: [local-a, plus-sg], strategy: spillover, tiers: [[local-a]]}", "targets in no tier: plus-sg"),
        (
            "{targets: [local-a], strategy: spillover, tiers: [[local-a], [plus-sg]]}",
            "'plus-sg' is not one of the alias's targets",
        ),
        (
            "{targets: [local-a], strategy: spillover, spillover: {high: {queue: 1}, low: {queue: 3}}}",
            "3.0 is above high.queue 1.0",
        ),
        ("{targets: [local-a], strategy: spillover, spillover: {high: {kv: 1.5}}}", "less than or equal to 1"),
    ],
)
def test_a_bad_spillover_alias_is_a_load_error_naming_its_path(alias_yaml: str, problem: str) -> None:
    text = POLICY.split("aliases:")[0] + f"aliases:\n  bad: {alias_yaml}\n"
    with pytest.raises(Exception) as caught:
        load_policy_text(text, {}, fx=CurrencyRates())
    assert "aliases.bad" in str(caught.value) and problem in str(caught.value)


def test_an_engine_without_metrics_given_a_metrics_url_is_a_load_error() -> None:
    text = POLICY.replace("engine: sglang,", "engine: ollama,")
    with pytest.raises(Exception, match=r"providers.gpu-b.metrics_url: engine ollama has no metrics to read"):
        load_policy_text(text, {}, fx=CurrencyRates())


def test_new_requests_stay_on_the_first_tier_until_it_spills(table: PolicyTable) -> None:
    assert names(table, facts(), load("chat", 0))[:2] in (["local-a", "local-b"], ["local-b", "local-a"])
    spilled = names(table, facts(), load("chat", 1))
    assert spilled[0] in ("plus-sg", "plus-us") and set(spilled[2:]) == {"local-a", "local-b"}  # local: last resort


def test_while_spilled_the_first_tier_still_takes_requests_whenever_it_is_under_low(table: PolicyTable) -> None:
    # Only the overflow goes to the cloud: the own GPUs are kept full while the alias stays spilled (no flapping).
    assert names(table, facts(), load("chat", 1, roomy=frozenset({0})))[0] in ("local-a", "local-b")
    assert names(table, facts(), load("chat", 1))[0] in ("plus-sg", "plus-us")


def test_a_pii_request_never_spills_to_the_cloud(table: PolicyTable) -> None:
    # Spilled, but the local tier is under its high mark (coming back, within dwell): it stays home.
    assert set(names(table, facts(data_class="pii"), load("chat", 1))) == {"local-a", "local-b"}


def test_a_saturated_home_tier_rejects_or_queues_as_the_alias_says(table: PolicyTable) -> None:
    with pytest.raises(LimitExceededError) as rejected:
        decide(facts("strict", data_class="pii"), table, HealthSnapshot(), load("strict", 1, frozenset({0})))
    assert rejected.value.status == 429 and rejected.value.headers()["retry-after"] == "1"
    assert rejected.value.code == "tier_saturated"
    with pytest.raises(TierSaturatedError) as queued:
        decide(facts(data_class="pii"), table, HealthSnapshot(), load("chat", 1, frozenset({0})))
    assert queued.value.status == 503 and queued.value.headers()["retry-after"] == "1"
    assert queued.value.max_wait_s == 5.0


def test_three_tiers_spill_one_after_the_other(table: PolicyTable) -> None:
    assert names(table, facts("tiered"), load("tiered", 2)) == ["plus-sg", "local-a", "local-b"]
    assert names(table, facts("tiered"), load("tiered", 1)) == ["local-b", "plus-sg", "local-a"]


def test_without_a_session_the_least_loaded_replica_goes_first(table: PolicyTable) -> None:
    busy = EngineLoad(queue=3, running=4, source="vllm", age_s=0.1)
    idle = EngineLoad(queue=0, running=1, source="sglang", age_s=0.1)
    snap = load("chat", 0, **{"local-a": busy, "local-b": idle})
    assert names(table, facts(), snap)[:2] == ["local-b", "local-a"]
    # A stale engine is measured by polyroute's own in-flight count instead.
    stale = EngineLoad(queue=9, source="inflight", age_s=5.0, reason="engine signal stale")
    snap = load("chat", 0, **{"local-a": stale, "local-b": idle})
    assert names(table, facts(), snap, HealthSnapshot(inflight={"local-a": 0}))[:2] == ["local-a", "local-b"]


def test_a_session_sticks_to_one_replica_and_one_cloud_deployment(table: PolicyTable) -> None:
    for session in ("s:conv-1", "s:conv-2", "p:0123abcd"):
        home = {names(table, facts(session=session), load("chat", 0))[0] for _ in range(5)}
        cloud = {names(table, facts(session=session), load("chat", 1))[0] for _ in range(5)}
        assert len(home) == 1 and len(cloud) == 1
    spread = Counter(names(table, facts(session=f"s:{i}"), load("chat", 0))[0] for i in range(200))
    assert set(spread) == {"local-a", "local-b"} and min(spread.values()) > 60  # sessions spread over replicas


def test_a_session_moves_off_a_replica_above_the_load_bound_and_counts_a_miss(table: PolicyTable) -> None:
    sessions = (f"s:{i}" for i in range(50))
    session = next(s for s in sessions if names(table, facts(session=s), load("chat", 0))[0] == "local-a")
    calm = decide(facts(session=session), table, HealthSnapshot(), load("chat", 0))
    assert calm.affinity_hit is True
    busy = EngineLoad(queue=6, running=4, source="vllm", age_s=0.1)
    snap = load("chat", 0, **{"local-a": busy, "local-b": EngineLoad(running=2, source="sglang", age_s=0.1)})
    moved = decide(facts(session=session), table, HealthSnapshot(), snap)
    assert moved.attempts[0].name == "local-b" and moved.affinity_hit is False
    # An open circuit makes the cloud deployment ineligible: the conversation moves, and comes back after.
    cloud = names(table, facts(session=session), load("chat", 1))[0]
    other = names(table, facts(session=session), load("chat", 1), HealthSnapshot(open_circuits=frozenset({cloud})))
    assert other[0] != cloud and names(table, facts(session=session), load("chat", 1))[0] == cloud


def test_explain_shows_the_tier_decision_and_each_targets_load(table: PolicyTable) -> None:
    snap = load(
        "chat",
        1,
        frozenset({0}),
        **{
            "local-a": EngineLoad(queue=7, running=8, kv=0.95, source="vllm", age_s=0.2),
            "local-b": EngineLoad(queue=0, age_s=2.0, reason="engine not answering (HTTP 503)"),
        },
    )
    trace = decide(facts(), table, HealthSnapshot(), snap).trace
    assert "spillover: active tier 1, tiers above high: 0, under low: none" in trace
    assert "  tier 0 local-a: queue=7 running=8 kv=0.95 (vllm metrics, 0.20s old); slots unknown, 0 placed" \
        " since the read" in trace
    assert "  tier 0 local-b: load from polyroute's in-flight count (engine not answering (HTTP 503))" in trace
    assert "  tier 1 plus-sg: load from polyroute's in-flight count (no engine metrics)" in trace
    assert any(line.startswith("spillover: request placed on tier 1") for line in trace)


def engines(*, slots: float | None = 2, **running: float) -> dict[str, EngineLoad]:
    return {name: EngineLoad(running=r, kv=0.1, source="vllm", age_s=0.1, slots=slots) for name, r in running.items()}


def test_a_request_the_engine_could_not_start_at_once_goes_to_the_cloud_before_its_queue_shows(
    table: PolicyTable,
) -> None:
    # The engines were read with every slot busy and nobody waiting: the next request would wait, so under a
    # `high: {queue: 0}` mark it goes to the cloud now, not after the next poll has seen the queue it made.
    full = LoadSnapshot(engines=engines(**{"local-a": 2, "local-b": 2}), aliases={"prompt": AliasLoad()})
    assert names(table, facts("prompt"), full)[0] == "plus-sg"
    room = LoadSnapshot(engines=engines(**{"local-a": 2, "local-b": 1}), aliases={"prompt": AliasLoad()})
    assert names(table, facts("prompt"), room)[0] == "local-b"


def test_requests_placed_since_the_last_read_count_as_load(table: PolicyTable) -> None:
    # Both engines had a free slot when read; polyroute has since placed one request on each (a burst within a poll).
    busy = engines(**{"local-a": 1, "local-b": 1})
    sent = LoadSnapshot(engines=busy, aliases={"prompt": AliasLoad()}, sent={"local-a": 1, "local-b": 1})
    assert names(table, facts("prompt"), sent)[0] == "plus-sg"
    one = LoadSnapshot(engines=busy, aliases={"prompt": AliasLoad()}, sent={"local-a": 1})
    assert names(table, facts("prompt"), one)[0] == "local-b"
    trace = decide(facts("prompt"), table, HealthSnapshot(), one).trace
    assert "  tier 0 local-a: queue=0 running=1 kv=0.10 (vllm metrics, 0.10s old); slots 2, 1 placed since the" \
        " read" in trace


def test_while_spilled_an_earlier_tier_takes_a_request_only_into_a_free_slot(table: PolicyTable) -> None:
    spilled = AliasLoad(active_tier=1, roomy=frozenset({0}))  # nobody waiting at the last tick
    full = LoadSnapshot(engines=engines(**{"local-a": 2, "local-b": 2}), aliases={"prompt": spilled})
    assert names(table, facts("prompt"), full)[0] == "plus-sg"
    free = LoadSnapshot(engines=engines(**{"local-a": 2, "local-b": 1}), aliases={"prompt": spilled})
    assert names(table, facts("prompt"), free)[0] == "local-b"
    # Slots not learned yet (the engine was never seen full): the queue alone decides, as before.
    unknown = LoadSnapshot(engines=engines(slots=None, **{"local-a": 2, "local-b": 2}), aliases={"prompt": spilled})
    assert names(table, facts("prompt"), unknown)[0] in ("local-a", "local-b")


def test_affinity_yields_when_its_replica_has_no_free_slot_and_another_has(table: PolicyTable) -> None:
    state = {"chat": AliasLoad()}
    sessions = (f"s:{i}" for i in range(50))
    session = next(s for s in sessions if names(table, facts(session=s), load("chat", 0))[0] == "local-a")
    # Nobody waiting on either when read, but local-a's slots are all busy: its cache is not worth a wait.
    snap = LoadSnapshot(engines=engines(slots=4, **{"local-a": 4, "local-b": 3}), aliases=state)
    moved = decide(facts(session=session), table, HealthSnapshot(), snap)
    assert moved.attempts[0].name == "local-b" and moved.affinity_hit is False
    snap = LoadSnapshot(engines=engines(slots=4, **{"local-a": 2, "local-b": 1}), aliases=state)
    kept = decide(facts(session=session), table, HealthSnapshot(), snap)
    assert kept.attempts[0].name == "local-a" and kept.affinity_hit is True
