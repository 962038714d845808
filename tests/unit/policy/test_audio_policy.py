"""Audio in the policy: deployment kinds, audio capabilities, and audio prices (tokens, seconds, characters)."""

from __future__ import annotations

import pytest

from gateway.errors import BadRequestError, NoEligibleTargetError, PolicyError
from gateway.policy.charges import charge
from gateway.policy.engine import decide
from gateway.policy.loader import load_policy_text
from gateway.policy.plan import HealthSnapshot, RequestFacts
from gateway.policy.pricing import CurrencyRates
from gateway.policy.table import PolicyTable
from gateway.portability.whatif import price_change
from gateway.state.base import UsageRow

FX = CurrencyRates(usd_per_cny=0.14, usd_per_eur=1.08)

POLICY = """
version: 1
providers:
  cloud: {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: cloud, jurisdiction: sg, vendor: alibaba}
  gpu:   {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: self_hosted, jurisdiction: onprem, vendor: self}
deployments:
  omni:    {provider: cloud, model: qwen3.5-omni-plus, capabilities: [vision, audio_in, audio_out, video_in],
            price: {input_per_mtok: 1.0, output_per_mtok: 4.0, audio_input_per_mtok: 10.0,
                    audio_output_per_mtok: 40.0}}
  text:    {provider: gpu, model: Qwen/Qwen3-32B, capabilities: [tools],
            price: {input_per_mtok: 0.5, output_per_mtok: 1.0}}
  whisper: {provider: gpu, model: openai/whisper-large-v3, kind: transcription, price: {per_second: 0.0001}}
  voice:   {provider: cloud, model: tts-1, kind: speech, price: {per_mchar: 15.0}}
aliases:
  talk:  {targets: [text, omni]}
  plain: {targets: [text]}
  stt:   {targets: [whisper]}
  tts:   {targets: [voice]}
rules:
  - name: team-b-stays-local
    when: {tenant: [team-b]}
    route: plain
"""


@pytest.fixture(scope="module")
def table() -> PolicyTable:
    return load_policy_text(POLICY, {}, fx=FX)


def test_an_audio_request_skips_a_text_only_target(table: PolicyTable) -> None:
    plan = decide(RequestFacts(alias="talk", tenant="t", needs=frozenset({"audio_out"})), table, HealthSnapshot())
    assert [d.name for d in plan.attempts] == ["omni"]
    assert [e.reason for e in plan.excluded] == ["capabilities (lacks audio_out)"]


def test_no_capable_target_is_a_400_naming_the_capability(table: PolicyTable) -> None:
    with pytest.raises(NoEligibleTargetError) as caught:
        decide(RequestFacts(alias="plain", tenant="t", needs=frozenset({"audio_out", "tools"})), table,
               HealthSnapshot())
    assert caught.value.status == 400
    assert caught.value.code == "unsupported_capability"
    assert caught.value.message.startswith("no target of alias plain supports audio_out")


def test_a_request_to_an_alias_of_another_kind_is_a_400_naming_its_kind(table: PolicyTable) -> None:
    with pytest.raises(BadRequestError) as caught:
        decide(RequestFacts(alias="stt", tenant="t", endpoint="chat"), table, HealthSnapshot())
    assert caught.value.status == 400 and caught.value.code == "model_kind_mismatch"
    assert "'stt'" in caught.value.message and "transcription" in caught.value.message
    with pytest.raises(BadRequestError) as other:
        decide(RequestFacts(alias="talk", tenant="t", endpoint="speech"), table, HealthSnapshot())
    assert other.value.code == "model_kind_mismatch" and "speech" in other.value.message
    plan = decide(RequestFacts(alias="tts", tenant="t", endpoint="speech"), table, HealthSnapshot())
    assert [d.name for d in plan.attempts] == ["voice"]


def test_a_rule_routing_to_a_chat_alias_leaves_audio_requests_alone(table: PolicyTable) -> None:
    chat = decide(RequestFacts(alias="talk", tenant="team-b"), table, HealthSnapshot())
    assert chat.route == "team-b-stays-local"
    spoken = decide(RequestFacts(alias="stt", tenant="team-b", endpoint="transcription"), table, HealthSnapshot())
    assert [d.name for d in spoken.attempts] == ["whisper"]


def test_an_alias_mixing_kinds_is_a_load_error() -> None:
    mixed = POLICY.replace("plain: {targets: [text]}", "plain: {targets: [text, whisper]}")
    with pytest.raises(PolicyError, match=r"aliases\.plain\.targets\[1\]: deployment 'whisper' is .*kind transcri"):
        load_policy_text(mixed, {}, fx=FX)


def test_audio_tokens_are_billed_at_audio_prices_and_not_again_as_text(table: PolicyTable) -> None:
    price = table.deployments["omni"].price
    # Model Studio counts audio inside prompt_tokens and completion_tokens: 1000 in (400 audio), 500 out (300 audio)
    bill = charge(price, input_tokens=1000, output_tokens=500, audio_input_tokens=400, audio_output_tokens=300)
    expected = (600 * 1.0 + 400 * 10.0 + 200 * 4.0 + 300 * 40.0) / 1_000_000
    assert bill.usd == pytest.approx(expected)
    text_only = charge(price, input_tokens=1000, output_tokens=500)
    assert text_only.usd == pytest.approx((1000 * 1.0 + 500 * 4.0) / 1_000_000)


def test_seconds_and_characters_are_billed_at_their_unit_prices(table: PolicyTable) -> None:
    assert charge(table.deployments["whisper"].price, input_tokens=0, output_tokens=0,
                  audio_seconds=90.0).usd == pytest.approx(0.009)
    assert charge(table.deployments["voice"].price, input_tokens=0, output_tokens=0,
                  characters=2000).usd == pytest.approx(0.03)


def test_audio_token_prices_need_text_prices() -> None:
    bad = POLICY.replace("input_per_mtok: 1.0, output_per_mtok: 4.0, ", "")
    with pytest.raises(PolicyError, match=r"deployments\.omni\.price: give input_per_mtok and output_per_mtok"):
        load_policy_text(bad, {}, fx=FX)


def test_what_if_prices_recorded_audio_at_the_new_prices(table: PolicyTable) -> None:
    recorded = [
        UsageRow(day="2026-12-01", tenant="t", alias="stt", deployment="whisper", provider="gpu", vendor="self",
                 hosting="self_hosted", jurisdiction="onprem", requests=3, cost_usd=0.0, audio_seconds=120.0),
        UsageRow(day="2026-12-01", tenant="t", alias="tts", deployment="voice", provider="cloud", vendor="alibaba",
                 hosting="cloud", jurisdiction="sg", requests=1, cost_usd=0.0, characters=1000),
    ]
    report = price_change(table, recorded, now=0.0)
    assert report["aliases"]["stt"]["now_usd"] == pytest.approx(0.012)
    assert report["aliases"]["tts"]["now_usd"] == pytest.approx(0.015)
