"""Tests of the usage report: groups, each vendor's and hosting type's share, and the `polyroute usage` table."""

from __future__ import annotations

import pytest

from gateway.observability.usage_cli import render_table
from gateway.observability.usage_report import summarize
from gateway.state.base import UsageRow


def row(tenant: str, vendor: str, hosting: str, requests: int, cost: float, tokens: tuple[int, ...]) -> UsageRow:
    """`tokens`: input, output, cached, reasoning."""
    input_tokens, output_tokens, cached_tokens, reasoning_tokens = tokens
    return UsageRow(
        day="2026-05-01",
        tenant=tenant,
        alias="coder",
        deployment=f"{vendor}-model",
        provider=vendor,
        vendor=vendor,
        hosting=hosting,
        jurisdiction="sg",
        requests=requests,
        cost_usd=cost,
        latency_s_sum=requests * 0.5,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached_tokens,
        reasoning_tokens=reasoning_tokens,
    )


ROWS = [
    row("team-a", "alibaba", "cloud", 30, 0.75, (3000, 600, 1000, 0)),
    row("team-b", "alibaba", "cloud", 10, 0.25, (1000, 200, 0, 0)),
    row("team-a", "self", "self_hosted", 60, 0.0001, (6000, 1200, 0, 40)),
]


def test_groups_sum_rows_and_are_ordered_by_spend() -> None:
    report = summarize(ROWS, ["vendor"])

    assert [g["vendor"] for g in report["groups"]] == ["alibaba", "self"]
    alibaba = report["groups"][0]
    assert (alibaba["requests"], alibaba["input_tokens"], alibaba["cached_tokens"]) == (40, 4000, 1000)
    assert alibaba["cost_usd"] == pytest.approx(1.0)
    assert alibaba["mean_latency_s"] == 0.5
    assert report["total"]["requests"] == 100 and report["total"]["reasoning_tokens"] == 40


def test_shares_show_where_requests_and_money_go() -> None:
    report = summarize(ROWS, ["tenant"])

    vendors, hostings = report["share_by_vendor"], report["share_by_hosting"]
    assert vendors["alibaba"]["request_share"] == 0.4 and vendors["self"]["request_share"] == 0.6
    assert vendors["alibaba"]["spend_share"] == pytest.approx(0.9999, abs=1e-4)
    assert hostings["self_hosted"]["requests"] == 60 and hostings["cloud"]["cost_usd"] == pytest.approx(1.0)


def test_unknown_dimension_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="jurisdiction"):
        summarize(ROWS, ["tenant", "colour"])


def test_table_lists_groups_total_and_shares() -> None:
    report = summarize(ROWS, ["tenant", "vendor"])
    report["since"] = report["until"] = "2026-05-01"

    lines = render_table(report).splitlines()

    assert lines[0] == "usage 2026-05-01 .. 2026-05-01 (UTC days)"
    assert lines[1].split()[:3] == ["tenant", "vendor", "requests"]
    assert lines[1].split()[-1] == "cost_usd"
    cells = {tuple(line.split()[:2]): line.split() for line in lines[2:6]}
    assert cells[("team-a", "alibaba")][-1] == "0.750000"
    assert cells[("team-a", "self")][-1] == "0.000100"  # small amounts stay readable, never 1e-04
    assert lines[5].split()[0] == "TOTAL" and lines[5].split()[1] == "100"
    assert lines[6].startswith("share by vendor: alibaba 40.0% of requests, 100.0% of spend")
    assert lines[7].startswith("share by hosting: cloud 40.0% of requests")


def test_the_table_shows_audio_columns_only_when_there_was_audio() -> None:
    assert "audio" not in render_table({**summarize(ROWS, ["vendor"]), "since": "d", "until": "d"})
    spoken = [*ROWS, UsageRow(day="2026-05-01", tenant="team-a", alias="talk", deployment="omni", provider="ms",
                              vendor="alibaba", hosting="cloud", jurisdiction="sg", requests=2,
                              audio_output_tokens=150, audio_seconds=12.5)]
    report = summarize(spoken, ["deployment"])
    assert report["total"]["audio_output_tokens"] == 150 and report["total"]["audio_seconds"] == 12.5
    header, *_, total = render_table({**report, "since": "d", "until": "d"}).splitlines()[1:-2]
    assert "audio_output_tokens" in header and "audio_seconds" in header and "audio_input_tokens" not in header
    assert total.split()[-2:] == ["150", "12.5"]
