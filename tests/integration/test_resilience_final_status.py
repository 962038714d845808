"""When every target failed, the status is the one the client can act on, and the official SDK acts on it."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.support.openai_schema import schema_errors
from tests.support.resilience import HELLO, PRIMARY_MODEL, PROVIDER_TYPES, Resilience


@pytest.fixture
def sdk(rs: Resilience) -> Iterator[openai.OpenAI]:
    """The openai client as an application uses it: its default retries (two) left on."""
    with openai.OpenAI(base_url=rs.gateway.url("/v1"), api_key="any") as client:
        yield client


def _requests(rs: Resilience) -> tuple[int, int]:
    return rs.cloud.stats()["total_requests"], rs.local.stats()["total_requests"]


def _sent(rs: Resilience, before: tuple[int, int]) -> tuple[int, int]:
    cloud, local = _requests(rs)
    return cloud - before[0], local - before[1]


@pytest.mark.parametrize("stream", [False, True], ids=["once", "stream"])
@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_a_prompt_too_long_for_every_target_is_a_400_the_sdk_does_not_retry(
    rs: Resilience, sdk: openai.OpenAI, ptype: str, stream: bool
) -> None:
    rs.cloud.inject([{"fault": "context_overflow", "count": 1, "model": PRIMARY_MODEL[ptype]}])
    rs.local.inject([{"fault": "context_overflow", "count": 1}])
    before = _requests(rs)
    with pytest.raises(openai.BadRequestError) as info:
        if stream:
            list(sdk.chat.completions.create(model=f"chain-{ptype}", messages=HELLO, stream=True))
        else:
            sdk.chat.completions.create(model=f"chain-{ptype}", messages=HELLO)
    assert _sent(rs, before) == (1, 1)  # each target once; the SDK made one request, not three
    assert info.value.code == "context_length_exceeded"
    assert info.value.type == "invalid_request_error"
    assert f"primary-{ptype}: context_window" in info.value.message and "backup: context_window" in info.value.message


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_content_refused_by_every_target_is_a_400_content_policy_violation(
    rs: Resilience, sdk: openai.OpenAI, ptype: str
) -> None:
    rs.cloud.inject([{"fault": "data_inspection", "count": 1, "model": PRIMARY_MODEL[ptype]}])
    rs.local.inject([{"fault": "data_inspection", "count": 1}])
    before = _requests(rs)
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model=f"chain-{ptype}", messages=HELLO)
    assert _sent(rs, before) == (1, 1)
    assert (info.value.code, info.value.type) == ("content_policy_violation", "invalid_request_error")


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_every_target_throttled_is_a_429_with_the_shortest_wait(rs: Resilience, ptype: str) -> None:
    rs.cloud.inject([{"fault": "throttling", "count": 1, "model": PRIMARY_MODEL[ptype], "retry_after": "7"}])
    rs.local.inject([{"fault": "throttling", "count": 1, "retry_after": "3"}])
    with pytest.raises(openai.RateLimitError) as info:
        rs.client().chat.completions.create(model=f"chain-{ptype}", messages=HELLO)
    assert info.value.response.headers["retry-after"] == "3"
    assert info.value.code == "rate_limit_exceeded"
    assert f"primary-{ptype}: rate_limit (upstream status 429)" in info.value.message
    assert "backup: rate_limit (upstream status 429)" in info.value.message


def test_the_sdk_waits_as_retry_after_says_and_then_is_served(rs: Resilience, sdk: openai.OpenAI) -> None:
    rs.cloud.inject([{"fault": "throttling", "count": 1, "model": PRIMARY_MODEL["openai"], "retry_after": "1"}])
    rs.local.inject([{"fault": "throttling", "count": 1, "retry_after": "1"}])
    before = _requests(rs)
    reply = sdk.chat.completions.create(model="chain-openai", messages=HELLO)
    assert "sim-cloud" in (reply.choices[0].message.content or "")
    assert _sent(rs, before) == (2, 1)  # one 429 from the gateway, one retry that the primary served


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_operator_side_failures_stay_a_502_naming_each_cause(rs: Resilience, ptype: str) -> None:
    rs.cloud.inject([{"fault": "invalid_key", "count": 1, "model": PRIMARY_MODEL[ptype]}])
    # a 404 that does not name the model as gone (a wrong path): not_found (a retired model opens the circuit)
    rs.local.inject([{"fault": "status", "status": 404, "count": 1, "message": "Not Found"}])
    with pytest.raises(openai.APIStatusError) as info:
        rs.client().chat.completions.create(model=f"chain-{ptype}", messages=HELLO)
    assert info.value.status_code == 502
    assert info.value.code == "upstream_error"
    assert f"primary-{ptype}: auth (upstream status 401)" in info.value.message
    assert "backup: not_found (upstream status 404)" in info.value.message
    assert "sk-sim-cloud-secret" not in info.value.message


def test_the_model_list_and_error_envelopes_match_the_published_schema(rs: Resilience) -> None:
    models = rs.client().models.with_raw_response.list()
    assert schema_errors("ListModelsResponse", models.http_response.json()) == []
    rs.cloud.inject([{"fault": "internal", "count": 1, "model": PRIMARY_MODEL["openai"]}])
    with pytest.raises(openai.APIStatusError) as info:
        rs.client().chat.completions.create(model="solo-openai", messages=HELLO)
    assert schema_errors("ErrorResponse", info.value.response.json()) == []
