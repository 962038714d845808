"""Shadow evaluation: sampling, which targets a copy may go to, the comparison, and the budget and concurrency caps."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gateway.errors import NoEligibleTargetError
from gateway.observability import names
from gateway.observability.metrics import Metrics
from gateway.policy.engine import decide
from gateway.policy.loader import load_policy_text
from gateway.policy.plan import HealthSnapshot, RequestFacts
from gateway.policy.table import Alias, Hosting, PolicyTable, Strategy
from gateway.portability.lockin import lockin_report
from gateway.portability.shadow import ShadowEvaluator, shadow_body, shadow_exclusion
from gateway.portability.shadow_compare import Answer, answer_of_body, answer_of_stream, compare
from gateway.portability.shadow_results import PASS_MIN_PAIRS
from gateway.providers.base import Endpoint, UpstreamReply, Usage
from gateway.state.base import RoutingFacts
from tests.unit.portability.test_shadow_config import FX, SHADOWED


def shadowed() -> PolicyTable:
    return load_policy_text(SHADOWED, {}, fx=FX)


# --- sampling ----------------------------------------------------------------------------------------------------


def test_only_aliases_with_shadow_targets_are_sampled_at_their_rate() -> None:
    table = shadowed()
    draws = iter([0.05, 0.2, 0.05, 0.05])
    evaluator = ShadowEvaluator(Metrics(), draw=lambda: next(draws))
    coder = table.aliases["coder"]  # sample: 0.1
    assert evaluator.sampled(coder, Endpoint.CHAT) is True
    assert evaluator.sampled(coder, Endpoint.CHAT) is False
    assert evaluator.sampled(table.aliases["chat"], Endpoint.CHAT) is False  # no shadow: no draw either
    assert evaluator.sampled(coder, Endpoint.EMBEDDING) is False
    assert evaluator.sampled(coder, Endpoint.COMPLETION) is True


def test_a_streamed_request_is_copied_as_a_non_stream_one() -> None:
    table = shadowed()
    body = {"model": "coder", "messages": [], "stream": True, "stream_options": {"include_usage": True}}
    copy = shadow_body(body, table.deployments["son"])
    assert copy == {"model": "claude-sonnet", "messages": [], "stream": False}
    assert body["stream"] is True  # the client's own body is left alone


# --- eligibility: the engine's own rules ---------------------------------------------------------------------------

DATA_CLASSES = st.sampled_from([None, "pii", "public", "internal"])
FACTS = st.builds(
    RequestFacts,
    alias=st.just("coder"),
    tenant=st.sampled_from(["team-a", "team-b", "team-c"]),
    data_class=DATA_CLASSES,
    tags=st.frozensets(st.sampled_from(["eu", "batch", "fast"]), max_size=2),
    prompt_tokens=st.integers(0, 300_000),
    needs=st.frozensets(st.sampled_from(["tools", "vision"]), max_size=1),
)
REQUIRE = st.fixed_dictionaries(
    {},
    optional={
        "hosting": st.sampled_from(["cloud", "self_hosted"]),
        "jurisdiction_not": st.lists(st.sampled_from(["us", "sg", "onprem"]), min_size=1, max_size=2, unique=True),
        "vendor_not": st.lists(st.sampled_from(["alibaba", "anthropic", "self"]), min_size=1, max_size=1),
    },
).filter(bool)
WHEN = st.fixed_dictionaries(
    {},
    optional={
        "data_class": st.lists(st.sampled_from(["pii", "public", "internal"]), min_size=1, max_size=2, unique=True),
        "tenant": st.lists(st.sampled_from(["team-a", "team-b"]), min_size=1, max_size=1),
        "tags": st.lists(st.sampled_from(["eu", "batch"]), min_size=1, max_size=1),
    },
)
RULES = st.lists(st.tuples(WHEN, REQUIRE), max_size=4)
PII_RULE = ({"data_class": ["pii"]}, {"hosting": "self_hosted"})


def with_rules(rules: list[tuple[dict[str, Any], dict[str, Any]]]) -> PolicyTable:
    return _table(orjson.dumps(rules).decode())


@functools.lru_cache(maxsize=512)
def _table(rules_json: str) -> PolicyTable:
    rules = orjson.loads(rules_json)
    written = "".join(
        f"  - name: r{i}\n    when: {orjson.dumps(when).decode()}\n    require: {orjson.dumps(require).decode()}\n"
        for i, (when, require) in enumerate(rules)
    )
    text = SHADOWED.split("rules:\n")[0] + ("rules:\n" + written if written else "") + "sensitive_data_classes: [pii]\n"
    return load_policy_text(text, {}, fx=FX)


def single_target_view(table: PolicyTable, target: str) -> PolicyTable:
    """The same policy with the alias routing to `target` alone: what `decide` would make of the copy."""
    alias = Alias(name="coder", targets=(target,), strategy=Strategy.PRIORITY)
    return PolicyTable(
        providers=table.providers, deployments=table.deployments, aliases={**table.aliases, "coder": alias},
        rules=table.rules, fallback=table.fallback, tenants={},
    )


@settings(max_examples=200, deadline=None)
@given(facts=FACTS, rules=RULES, target=st.sampled_from(["qwen-plus", "qwen-local", "son"]))
def test_a_copy_goes_exactly_where_the_engine_would_route_the_request(
    facts: RequestFacts, rules: list[tuple[dict[str, Any], dict[str, Any]]], target: str
) -> None:
    table = with_rules(rules)
    allowed = shadow_exclusion(table.deployments[target], facts, table) is None
    try:
        decide(facts, single_target_view(table, target), HealthSnapshot())
        routed = True
    except NoEligibleTargetError:
        routed = False
    assert allowed == routed


@settings(max_examples=200, deadline=None)
@given(facts=FACTS, rules=RULES)
def test_a_pii_request_is_never_copied_to_a_cloud_target(
    facts: RequestFacts, rules: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    table = with_rules([*rules, PII_RULE])
    pii = dataclasses.replace(facts, data_class="pii")
    for deployment in table.deployments.values():
        if deployment.provider.hosting is Hosting.CLOUD:
            assert shadow_exclusion(deployment, pii, table) is not None


# --- comparison ----------------------------------------------------------------------------------------------------


def chat(content: str | None, tool_calls: list[dict[str, Any]] | None = None) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return orjson.dumps({"choices": [{"index": 0, "message": message}]})


def call(name: str, arguments: str) -> dict[str, Any]:
    return {"id": "c", "type": "function", "function": {"name": name, "arguments": arguments}}


def test_texts_agree_after_whitespace_and_case_are_normalised() -> None:
    same = compare(answer_of_body(chat("Paris is the capital.")), answer_of_body(chat("paris  is the\nCAPITAL.")), {})
    assert same.similarity == 1.0 and same.exact is False
    exact = compare(Answer(text="ok"), Answer(text="ok"), {})
    assert exact.exact is True and exact.json_valid is None and exact.tool_names is None
    far = compare(Answer(text="The answer is 42."), Answer(text="I cannot help with that request."), {})
    assert far.similarity < 0.6


def test_json_answers_are_checked_for_validity_and_top_level_keys_when_json_was_asked_for() -> None:
    body = {"response_format": {"type": "json_object"}}
    same = compare(Answer(text='{"a": 1, "b": 2}'), Answer(text='{"b": 3, "a": 1}'), body)
    assert (same.json_valid, same.json_same_keys) == (True, True)
    other = compare(Answer(text='{"a": 1}'), Answer(text='{"c": 1}'), body)
    assert (other.json_valid, other.json_same_keys) == (True, False)
    broken = compare(Answer(text='{"a": 1}'), Answer(text="Sure! {a: 1}"), body)
    assert (broken.json_valid, broken.json_same_keys) == (False, False)


def test_tool_calls_agree_on_names_and_on_arguments_as_json() -> None:
    ours = answer_of_body(chat(None, [call("get_weather", '{"city": "Paris", "unit": "c"}')]))
    same = answer_of_body(chat(None, [call("get_weather", '{"unit":"c","city":"Paris"}')]))
    other_args = answer_of_body(chat(None, [call("get_weather", '{"city": "Lyon"}')]))
    other_name = answer_of_body(chat(None, [call("search", '{"city": "Paris"}')]))
    assert (compare(ours, same, {}).tool_names, compare(ours, same, {}).tool_arguments) == (True, True)
    assert (compare(ours, other_args, {}).tool_names, compare(ours, other_args, {}).tool_arguments) == (True, False)
    assert (compare(ours, other_name, {}).tool_names, compare(ours, other_name, {}).tool_arguments) == (False, False)


def test_a_relayed_stream_is_read_back_into_its_text_and_tool_calls() -> None:
    def event(delta: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": delta}]}) + b"\n\n"

    chunks = [
        event({"role": "assistant", "content": ""}),
        event({"content": "Hello "}) + event({"content": "world"}),
        event({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": '{"a"'}}]}),
        event({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}) + b"data: [DONE]\n\n",
    ]
    assert answer_of_stream(chunks) == Answer(text="Hello world", tool_calls=(("f", '{"a": 1}'),))


# --- budget and concurrency ----------------------------------------------------------------------------------------


class HeldProvider:
    """An injected provider whose answers wait until the test lets them go."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.release = asyncio.Event()

    async def send(self, call: Any) -> UpstreamReply:
        self.sent.append(call.body)
        await self.release.wait()
        usage = Usage(input_tokens=10, output_tokens=5)
        return UpstreamReply(body=chat("the same answer"), usage=usage)


def finished_request(table: PolicyTable, provider: HeldProvider, data_class: str | None = None) -> Any:
    facts = RequestFacts(alias="coder", tenant="team-a", data_class=data_class, prompt_tokens=1000)
    plan = SimpleNamespace(alias="coder", timeouts=table.fallback.timeouts)
    parsed = SimpleNamespace(
        endpoint=Endpoint.CHAT, body={"model": "coder", "messages": []}, stream=False, prompt_tokens=1000
    )
    outcome = SimpleNamespace(deployment=table.deployments["qwen-plus"], failures=[])
    providers = {name: provider for name in table.providers}
    return SimpleNamespace(
        table=table, facts=facts, plan=plan, parsed=parsed, outcome=outcome, providers=providers, request_id="r",
        shadow_capture=[chat("the same answer")],
    )


def shadow_counts(metrics: Metrics) -> dict[tuple[str, str], float]:
    text = metrics.render()[0].decode()
    return {
        (s.labels["target"], s.labels["result"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == names.SHADOW_REQUESTS_TOTAL + "_total" or s.name == names.SHADOW_REQUESTS_TOTAL
        if s.value
    }


async def test_copies_over_the_concurrency_cap_are_dropped_and_counted() -> None:
    table = shadowed()  # coder: shadow targets qwen-local and son, max_concurrency 2, budget 1 USD a day
    metrics = Metrics()
    metrics.set_known(aliases=table.aliases, deployments=table.deployments, providers=table.providers,
                      vendors=["alibaba", "self", "anthropic"], tenants=["team-a"])
    evaluator, provider = ShadowEvaluator(metrics), HeldProvider()
    for _ in range(2):
        evaluator.primary_finished(finished_request(table, provider), 200, Usage(10, 5), 0.001, 0.5, None)
    await asyncio.sleep(0)
    assert len(provider.sent) == 2  # the first request's two copies fill the cap
    provider.release.set()
    await evaluator.settled()
    await evaluator.close()
    assert shadow_counts(metrics) == {
        ("qwen-local", "compared"): 1, ("son", "compared"): 1,
        ("qwen-local", "dropped_concurrency"): 1, ("son", "dropped_concurrency"): 1,
    }


async def test_copies_past_the_daily_shadow_budget_are_dropped_and_counted() -> None:
    # A copy to son is estimated at ~0.003 USD before it is sent and settled at ~0.0001 USD after.
    table = load_policy_text(SHADOWED.replace("budget_usd_per_day: 1", "budget_usd_per_day: 0.01"), {}, fx=FX)
    evaluator, provider = ShadowEvaluator(Metrics()), HeldProvider()
    provider.release.set()
    spent = 0
    for _ in range(400):
        evaluator.primary_finished(finished_request(table, provider), 200, Usage(10, 5), 0.001, 0.5, None)
        await evaluator.settled()
        spent += 1
    await evaluator.close()
    son = evaluator.results.report("coder")["aliases"]["coder"]["son"]
    assert son["results"]["dropped_budget"] > 0
    assert 0 < son["cost_usd"]["shadow"] <= 0.01 and son["results"]["compared"] > 0
    results = son["results"]
    assert results["compared"] + results["dropped_budget"] + results["dropped_concurrency"] == spent


async def test_a_pii_request_is_not_copied_to_the_cloud_target_and_counts_as_excluded() -> None:
    table = with_rules([PII_RULE])
    evaluator, provider = ShadowEvaluator(Metrics()), HeldProvider()
    provider.release.set()
    evaluator.primary_finished(finished_request(table, provider, "pii"), 200, Usage(10, 5), 0.001, 0.5, None)
    await evaluator.settled()
    await evaluator.close()
    report = evaluator.results.report()["aliases"]["coder"]
    assert report["son"]["results"]["excluded"] == 1 and report["son"]["results"]["compared"] == 0
    assert report["qwen-local"]["results"]["compared"] == 1
    assert [b["model"] for b in provider.sent] == ["qwen3-32b"]


async def test_a_target_passes_after_enough_agreeing_pairs_and_becomes_a_proven_alternative() -> None:
    table = with_rules([])
    evaluator, provider = ShadowEvaluator(Metrics()), HeldProvider()
    provider.release.set()
    for i in range(PASS_MIN_PAIRS):
        assert evaluator.results.proven() == {}, i
        evaluator.primary_finished(finished_request(table, provider), 200, Usage(10, 5), 0.0001, 0.5, None)
        await evaluator.settled()
    await evaluator.close()
    assert evaluator.results.proven() == {"coder": ["qwen-local", "son"]}
    aliases = lockin_report(table, [], RoutingFacts(), evaluator.results.proven())["aliases"]
    assert (aliases["coder"]["proven_alternatives"], aliases["chat"]["proven_alternatives"]) == (
        ["qwen-local", "son"], [],
    )
    qwen = evaluator.results.report()["aliases"]["coder"]["qwen-local"]
    assert qwen["passed"] and qwen["agreement"]["similarity"] == 1.0 and qwen["agreement"]["exact"] == 1.0


async def test_record_writes_compared_pairs_as_jsonl_but_never_a_sensitive_data_class(tmp_path: Path) -> None:
    record = tmp_path / "pairs.jsonl"
    text = SHADOWED.replace("budget_usd_per_day: 1", f"budget_usd_per_day: 1, record: '{record}'")
    table = load_policy_text(text, {}, fx=FX)  # sensitive_data_classes: [pii]
    evaluator, provider = ShadowEvaluator(Metrics()), HeldProvider()
    provider.release.set()
    evaluator.primary_finished(finished_request(table, provider, "pii"), 200, Usage(10, 5), 0.001, 0.5, None)
    await evaluator.settled()
    evaluator.primary_finished(finished_request(table, provider, "public"), 200, Usage(10, 5), 0.001, 0.5, None)
    await evaluator.settled()
    await evaluator.close()
    assert len(provider.sent) == 3  # the pii request was compared on qwen-local (its rule keeps it off son)...
    pairs = [orjson.loads(line) for line in record.read_bytes().splitlines()]
    assert sorted(p["target"] for p in pairs) == ["qwen-local", "son"]  # ...but only the public one's were written
    assert {p["primary_text"] for p in pairs} == {"the same answer"} and pairs[0]["similarity"] == 1.0
