"""The lock-in report's numbers: shares, HHI, stranded share under rules, provider-specific parameters."""

from __future__ import annotations

from gateway.policy.table import PolicyTable
from gateway.portability.lockin import hhi, lockin_report
from gateway.state.base import RoutingFacts
from tests.unit.portability.conftest import FACTS, USAGE


def test_hhi_is_the_sum_of_squared_percent_shares() -> None:
    assert hhi([6.0, 2.0, 2.0]) == 4400.0
    assert hhi([1.0]) == 10_000.0
    assert hhi([]) == 0.0 and hhi([0.0, 0.0]) == 0.0


def test_shares_and_concentration_by_vendor_jurisdiction_and_hosting(table: PolicyTable) -> None:
    report = lockin_report(table, USAGE, FACTS)
    assert report["totals"] == {"requests": 10, "tokens": 1000, "cost_usd": 10.0}
    vendor = report["share"]["vendor"]
    assert vendor["alibaba"] == {
        "requests": 6, "request_share": 0.6, "tokens": 500, "token_share": 0.5, "cost_usd": 6.0, "spend_share": 0.6,
    }
    assert vendor["anthropic"]["token_share"] == 0.0
    assert report["share"]["hosting"]["self_hosted"]["request_share"] == 0.2
    assert report["share"]["jurisdiction"]["us"]["spend_share"] == 0.2
    assert report["hhi"] == {"spend": 4400.0, "tokens": 5000.0}
    assert report["facts"] == {"requests": 10, "dropped": 7}


def test_stranded_share_follows_the_rules_for_the_traffic_received(table: PolicyTable) -> None:
    aliases = lockin_report(table, USAGE, FACTS)["aliases"]
    coder = aliases["coder"]
    assert coder["critical"] is True
    assert coder["dominant_vendor"] == "alibaba" and coder["vendors"] == ["alibaba", "self"]
    # Only the 40,000-token prompt has no target outside alibaba (qwen-local's window is 32,768).
    assert (coder["requests"], coder["stranded_requests"], coder["stranded_share"]) == (5, 1, 0.2)
    assert coder["self_hosted_share"] == 0.8
    assert coder["other_vendor_allowed"] is False and coder["self_hosted_allowed"] is False
    chat = aliases["chat"]
    # team-b may not use the us target, and pii may use neither cloud target: 3 of 5 requests are stranded.
    assert (chat["requests"], chat["stranded_requests"], chat["stranded_share"]) == (5, 3, 0.6)
    assert chat["self_hosted_share"] == 0.0


def test_an_alias_without_traffic_is_judged_on_a_plain_request(table: PolicyTable) -> None:
    aliases = lockin_report(table, USAGE, RoutingFacts())["aliases"]
    assert aliases["solo"]["requests"] == 0
    assert aliases["solo"]["other_vendor_allowed"] is False and aliases["solo"]["stranded_share"] == 1.0
    assert aliases["chat"]["other_vendor_allowed"] is True and aliases["chat"]["stranded_share"] == 0.0


def test_provider_specific_parameters_are_counted_per_alias_with_their_vendor(table: PolicyTable) -> None:
    chat = lockin_report(table, USAGE, FACTS)["aliases"]["chat"]
    assert chat["provider_params"] == {
        "share": 0.4,
        "requests": 2,
        "params": {"enable_thinking": {"vendor": "alibaba", "requests": 2, "share": 0.4}},
    }
    assert chat["proven_alternatives"] == []
