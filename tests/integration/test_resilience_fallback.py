"""Every upstream failure is classified and falls back in plan order, for both provider types, stream or not."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.support.resilience import (
    HELLO,
    PRIMARY_MODEL,
    PROVIDER_TYPES,
    Resilience,
    content_of,
    metric,
    stream_lines,
)

# (fault on the primary, which requests it applies to, the class the gateway must name)
FAULTS: list[tuple[dict[str, Any], str, str]] = [
    ({"fault": "throttling"}, "both", "rate_limit"),
    ({"fault": "insufficient_quota"}, "both", "rate_limit"),
    ({"fault": "internal"}, "both", "server_error"),
    ({"fault": "status", "status": 503}, "both", "server_error"),
    ({"fault": "data_inspection"}, "both", "content_policy"),
    ({"fault": "context_overflow"}, "both", "context_window"),
    ({"fault": "invalid_key"}, "both", "auth"),
    ({"fault": "reset"}, "both", "connection_error"),
    ({"fault": "malformed_json"}, "non-stream", "server_error"),
    ({"fault": "malformed_sse"}, "stream", "server_error"),
    ({"fault": "inband_error", "after": 0}, "both", "server_error"),
    ({"fault": "inband_error", "after": 0, "code": "DataInspectionFailed",
      "message": "Input data may contain inappropriate content."}, "both", "content_policy"),
]
CASES = [
    pytest.param(ptype, stream, fault, reason, id=f"{ptype}-{'stream' if stream else 'once'}-{fault['fault']}-{reason}")
    for ptype in PROVIDER_TYPES
    for stream in (False, True)
    for fault, applies, reason in FAULTS
    if applies == "both" or (applies == "stream") == stream
]


@pytest.mark.parametrize(("ptype", "stream", "fault", "reason"), CASES)
def test_a_failing_primary_falls_back_and_says_why(
    rs: Resilience, ptype: str, stream: bool, fault: dict[str, Any], reason: str
) -> None:
    rs.cloud.inject([{**fault, "count": 1, "model": PRIMARY_MODEL[ptype]}])
    served_before = rs.cloud.stats()["faults_served"].get(fault["fault"], 0)
    if stream:
        headers, lines = stream_lines(rs.client(), f"chain-{ptype}")
        assert lines[-1] == "[DONE]"
        assert "sim-local" in content_of(lines)
    else:
        raw = rs.client().chat.completions.with_raw_response.create(model=f"chain-{ptype}", messages=HELLO)
        headers = dict(raw.headers)
        assert "sim-local" in (raw.parse().choices[0].message.content or "")
    assert rs.cloud.stats()["faults_served"].get(fault["fault"], 0) == served_before + 1
    assert headers["x-polyroute-deployment"] == "backup"
    assert headers["x-polyroute-fallback-reason"] == reason
    assert headers["x-polyroute-attempts"] == "2"
    text = rs.metrics()
    assert metric(text, "polyroute_fallbacks_total", reason=reason, to="backup") >= 1
    assert metric(text, "polyroute_upstream_requests_total", deployment=f"primary-{ptype}", outcome=reason) >= 1


@pytest.mark.parametrize("stream", [False, True], ids=["once", "stream"])
@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_a_bad_request_goes_back_to_the_client_without_fallback(rs: Resilience, ptype: str, stream: bool) -> None:
    rs.cloud.inject([{"fault": "status", "status": 400, "count": 1, "model": PRIMARY_MODEL[ptype],
                      "message": "temperature must be between 0 and 2"}])
    rs.local.reset_stats()
    with pytest.raises(openai.BadRequestError) as info:
        if stream:
            list(rs.client().chat.completions.create(model=f"chain-{ptype}", messages=HELLO, stream=True))
        else:
            rs.client().chat.completions.create(model=f"chain-{ptype}", messages=HELLO)
    assert "temperature must be between 0 and 2" in str(info.value)
    assert info.value.response.headers["x-polyroute-attempts"] == "1"
    assert rs.local.stats()["total_requests"] == 0


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_context_window_falls_back_only_to_a_larger_window(rs: Resilience, ptype: str) -> None:
    rs.cloud.inject([{"fault": "context_overflow", "count": 1, "model": PRIMARY_MODEL[ptype]}])
    raw = rs.client().chat.completions.with_raw_response.create(model=f"narrow-{ptype}", messages=HELLO)
    assert raw.headers["x-polyroute-deployment"] == "backup"  # backup-small (4000 tokens) was skipped
    assert raw.headers["x-polyroute-fallback-reason"] == "context_window"
    assert raw.headers["x-polyroute-attempts"] == "2"


@pytest.mark.parametrize("stream", [False, True], ids=["once", "stream"])
@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_when_every_target_fails_the_message_lists_each_one(rs: Resilience, ptype: str, stream: bool) -> None:
    rs.cloud.inject([{"fault": "throttling", "count": 1, "model": PRIMARY_MODEL[ptype]}])
    rs.local.inject([{"fault": "internal", "count": 1}])
    with pytest.raises(openai.APIStatusError) as info:
        if stream:
            list(rs.client().chat.completions.create(model=f"chain-{ptype}", messages=HELLO, stream=True))
        else:
            rs.client().chat.completions.create(model=f"chain-{ptype}", messages=HELLO)
    assert info.value.status_code == 502
    message = str(info.value)
    assert f"primary-{ptype}: rate_limit (upstream status 429)" in message
    assert "backup: server_error (upstream status 500)" in message
    assert "sk-sim-cloud-secret" not in message
    assert info.value.response.headers["x-polyroute-attempts"] == "2"


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_only_rate_limits_and_unreachable_targets_make_a_503(rs: Resilience, ptype: str) -> None:
    rs.cloud.inject([{"fault": "throttling", "count": 1, "model": PRIMARY_MODEL[ptype], "retry_after": "1"}])
    rs.local.inject([{"fault": "reset", "count": 1}])
    with pytest.raises(openai.APIStatusError) as info:
        rs.client().chat.completions.create(model=f"chain-{ptype}", messages=HELLO)
    assert info.value.status_code == 503
    assert "backup: connection_error" in str(info.value)
