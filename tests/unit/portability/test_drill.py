"""The vendor drill: recorded facts replayed without a vendor, refusals named by rule, critical aliases."""

from __future__ import annotations

import pytest

from gateway.errors import PolyrouteError
from gateway.policy.table import PolicyTable
from gateway.portability.drill import vendor_drill
from tests.unit.portability.conftest import FACTS, USAGE


def test_without_a_vendor_each_alias_says_what_is_refused_by_which_rule_and_where_the_rest_go(
    table: PolicyTable,
) -> None:
    report = vendor_drill(table, USAGE, FACTS, without="alibaba")
    assert report["removed_deployments"] == ["qwen-plus"]
    assert (report["requests"], report["refused"]) == (10, 4)
    coder = report["aliases"]["coder"]
    assert (coder["requests"], coder["refused"], coder["stranded_share"]) == (5, 1, 0.2)
    assert coder["refused_by"] == {"context window": 1}
    assert coder["served_by_before"] == {"qwen-local": 1, "qwen-plus": 4}
    assert coder["served_by_after"] == {"qwen-local": 4}
    chat = report["aliases"]["chat"]
    assert chat["refused_by"] == {"rule pii-stays-home": 1, "rule team-b-not-us": 2}
    assert chat["served_by_after"] == {"son": 2}
    assert report["aliases"]["solo"]["requests"] == 0


def test_cost_and_latency_change_at_policy_prices_and_observed_latencies(table: PolicyTable) -> None:
    coder = vendor_drill(table, USAGE, FACTS, without="alibaba")["aliases"]["coder"]
    # 3 requests of 100 in / 10 out move from qwen-plus ($1/$2 per M) to qwen-local ($0.5/$0.5); 1 pii stays.
    assert coder["cost"] == {
        "requests": 4,
        "before_usd": pytest.approx(0.000415),
        "after_usd": pytest.approx(0.00022),
        "change_usd": pytest.approx(-0.000195),
    }
    # observed: qwen-plus 1.0 s, qwen-local 2.0 s
    assert coder["latency"] == {"requests": 4, "mean_before_s": 1.25, "mean_after_s": 2.0}


def test_a_critical_alias_that_loses_more_than_allowed_fails_the_drill(table: PolicyTable) -> None:
    strict = vendor_drill(table, USAGE, FACTS, without="alibaba")
    assert strict["aliases"]["coder"]["failed"] is True
    assert strict["aliases"]["chat"]["failed"] is False  # not critical: reported, never failing
    assert (strict["passed"], strict["failed_aliases"]) == (False, ["coder"])
    tolerant = vendor_drill(table, USAGE, FACTS, without="alibaba", max_stranded=0.2)
    assert tolerant["passed"] is True
    assert vendor_drill(table, USAGE, FACTS, without="anthropic")["passed"] is True


def test_an_unknown_vendor_is_an_error_naming_the_vendors(table: PolicyTable) -> None:
    with pytest.raises(PolyrouteError, match=r"no provider in the policy has vendor 'alibba'.*'alibaba'"):
        vendor_drill(table, USAGE, FACTS, without="alibba")
