"""Model Studio's account, quota and in-stream failures as it really words them, through both provider types.

An account in arrears or a spent free quota fails over at once and opens the circuit for its cooldown; the
per-minute rate quota is still retried; an in-stream `<400> ...` error is classified by its status and code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.support.resilience import (
    FALLBACK_ON,
    HELLO,
    PRIMARY_MODEL,
    PROVIDER_TYPES,
    Resilience,
    error_of,
    eventually,
    metric,
    output_of,
    resilience_stack,
    stream_lines,
)

CONTEXT = "<400> InternalError.Algo.InvalidParameter: Range of input length should be [1, 983616]"
BAD_PARAMETER = "<400> InternalError.Algo.InvalidParameter: The value of top_p must be in (0, 1]"
MODERATION = "<400> InternalError.Algo.DataInspectionFailed: Output data may contain inappropriate content."


@pytest.fixture(scope="module")
def ms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Resilience]:
    on = FALLBACK_ON + ", account, quota_exhausted, retired"
    with resilience_stack(tmp_path_factory.mktemp("modelstudio"), on=on, retries=2, cooldown="1500ms") as stack:
        yield stack


@pytest.fixture(autouse=True)
def _no_faults_left(ms: Resilience) -> Iterator[None]:
    yield
    ms.cloud.clear()
    ms.local.clear()


def explain(rs: Resilience, alias: str) -> dict[str, Any]:
    status, plan = rs.admin("POST", "/admin/routes/explain", {"model": alias, "messages": HELLO})
    assert status == 200, plan
    result: dict[str, Any] = plan
    return result


def served(rs: Resilience, fault: str) -> int:
    count: int = rs.cloud.stats()["faults_served"].get(fault, 0)
    return count


def primary_requests(rs: Resilience, ptype: str) -> int:
    count: int = rs.cloud.stats()["requests_by_model"].get(PRIMARY_MODEL[ptype], 0)
    return count


def assert_circuit_opened(rs: Resilience, ptype: str, reason: str) -> None:
    """Open now (gauge and route explain), skipped by the next request, and logged with its reason."""
    primary = f"primary-{ptype}"
    eventually(lambda: metric(rs.metrics(), "polyroute_circuit_open", deployment=primary) == 1, "the circuit gauge")
    assert {"deployment": primary, "reason": "circuit open"} in explain(rs, f"chain-{ptype}")["excluded"]
    before = primary_requests(rs, ptype)
    headers = rs.client().chat.completions.with_raw_response.create(model=f"chain-{ptype}", messages=HELLO).headers
    assert headers["x-polyroute-deployment"] == "backup" and headers["x-polyroute-attempts"] == "1"
    assert primary_requests(rs, ptype) == before  # not even tried while open
    assert f"circuit opened for deployment {primary}" in rs.gateway.logs()
    assert f"({reason})" in rs.gateway.logs()
    # Leave it closed for the next test: after the cooldown, one probe that succeeds closes it.
    eventually(lambda: explain(rs, f"chain-{ptype}")["attempts"][0] == primary, "the cooldown to end", timeout=5)
    rs.client().chat.completions.create(model=f"solo-{ptype}", messages=HELLO)


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_an_account_in_arrears_is_answered_by_the_self_hosted_fallback(ms: Resilience, ptype: str) -> None:
    ms.cloud.inject([{"fault": "arrearage", "count": 1, "model": PRIMARY_MODEL[ptype]}])
    attempts = metric(ms.metrics(), "polyroute_upstream_requests_total", deployment=f"primary-{ptype}",
                      outcome="account")
    raw = ms.client().chat.completions.with_raw_response.create(model=f"chain-{ptype}", messages=HELLO)
    assert "sim-local" in (raw.parse().choices[0].message.content or "")
    assert raw.headers["x-polyroute-deployment"] == "backup"
    assert raw.headers["x-polyroute-fallback-reason"] == "account"
    text = ms.metrics()
    assert metric(text, "polyroute_upstream_requests_total", deployment=f"primary-{ptype}",
                  outcome="account") == attempts + 1
    assert metric(text, "polyroute_fallbacks_total", reason="account", to="backup") >= 1
    assert_circuit_opened(ms, ptype, "account")


RETIRED_ANSWERS = {
    "404 model_not_found": (404, "model_not_found", "The model `qwen-plus-2025-01-25` does not exist or you do not "
                            "have access to it."),
    "410 deprecated": (410, "model_deprecated", "The model `qwen-plus-2025-01-25` has been deprecated."),
}


@pytest.mark.parametrize("answer", sorted(RETIRED_ANSWERS))
@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_a_retired_model_falls_back_and_is_skipped_for_the_cooldown(ms: Resilience, ptype: str, answer: str) -> None:
    status, code, message = RETIRED_ANSWERS[answer]
    ms.cloud.inject([{"fault": "status", "status": status, "code": code, "message": message, "count": 1,
                      "model": PRIMARY_MODEL[ptype]}])
    raw = ms.client().chat.completions.with_raw_response.create(model=f"chain-{ptype}", messages=HELLO)
    assert "sim-local" in (raw.parse().choices[0].message.content or "")
    assert raw.headers["x-polyroute-fallback-reason"] == "retired"
    text = ms.metrics()
    assert metric(text, "polyroute_upstream_requests_total", deployment=f"primary-{ptype}", outcome="retired") >= 1
    assert metric(text, "polyroute_fallbacks_total", reason="retired", to="backup") >= 1
    assert_circuit_opened(ms, ptype, "retired")


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_a_spent_free_quota_is_tried_once_then_the_fallback_answers(ms: Resilience, ptype: str) -> None:
    ms.cloud.inject([{"fault": "quota_exhausted", "count": 5, "model": PRIMARY_MODEL[ptype]}])
    before = served(ms, "quota_exhausted")
    attempts = metric(ms.metrics(), "polyroute_upstream_requests_total", deployment=f"primary-{ptype}",
                      outcome="quota_exhausted")
    with pytest.raises(openai.APIStatusError) as info:  # the cloud deployment alone: nothing to fall back to
        ms.client().chat.completions.create(model=f"solo-{ptype}", messages=HELLO)
    assert served(ms, "quota_exhausted") == before + 1  # no retry round spent on it (policy: retries 2)
    assert info.value.response.headers["x-polyroute-attempts"] == "1"
    assert "quota_exhausted" in info.value.message and "Free allocated quota exceeded" in info.value.message
    text = ms.metrics()
    assert metric(text, "polyroute_upstream_requests_total", deployment=f"primary-{ptype}",
                  outcome="quota_exhausted") == attempts + 1
    ms.cloud.clear()  # what was left of the quota's faults: the probe after the cooldown then succeeds
    assert_circuit_opened(ms, ptype, "quota_exhausted")


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_a_spent_free_quota_on_the_way_falls_back_with_its_reason(ms: Resilience, ptype: str) -> None:
    ms.cloud.inject([{"fault": "quota_exhausted", "count": 1, "model": PRIMARY_MODEL[ptype]}])
    raw = ms.client().chat.completions.with_raw_response.create(model=f"chain-{ptype}", messages=HELLO)
    assert raw.headers["x-polyroute-deployment"] == "backup"
    assert raw.headers["x-polyroute-fallback-reason"] == "quota_exhausted"
    assert metric(ms.metrics(), "polyroute_fallbacks_total", reason="quota_exhausted", to="backup") >= 1
    assert_circuit_opened(ms, ptype, "quota_exhausted")


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_the_per_minute_rate_quota_is_still_retried(ms: Resilience, ptype: str) -> None:
    ms.cloud.inject([{"fault": "throttling", "count": 1, "model": PRIMARY_MODEL[ptype]}])
    raw = ms.client().chat.completions.with_raw_response.create(model=f"solo-{ptype}", messages=HELLO)
    assert raw.headers["x-polyroute-deployment"] == f"primary-{ptype}"
    assert raw.headers["x-polyroute-attempts"] == "2"  # the throttled try, then the retry that succeeded
    assert explain(ms, f"chain-{ptype}")["attempts"][0] == f"primary-{ptype}"  # no circuit opened


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_an_inband_context_error_before_the_first_byte_is_a_context_window(ms: Resilience, ptype: str) -> None:
    ms.cloud.inject([{"fault": "inband_error", "after": 0, "count": 1, "model": PRIMARY_MODEL[ptype],
                      "message": CONTEXT}])
    headers, lines = stream_lines(ms.client(), f"chain-{ptype}")
    assert headers["x-polyroute-fallback-reason"] == "context_window"
    assert headers["x-polyroute-deployment"] == "backup" and "sim-local" in output_of(lines)


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_an_inband_400_is_the_requests_fault_not_a_server_error(ms: Resilience, ptype: str) -> None:
    ms.cloud.inject([{"fault": "inband_error", "after": 0, "count": 1, "model": PRIMARY_MODEL[ptype],
                      "message": BAD_PARAMETER}])
    ms.local.reset_stats()
    with pytest.raises(openai.BadRequestError) as info:
        list(ms.client().chat.completions.create(model=f"chain-{ptype}", messages=HELLO, stream=True))
    assert "The value of top_p must be in (0, 1]" in info.value.message
    assert info.value.response.headers["x-polyroute-attempts"] == "1"  # neither retried nor sent elsewhere
    assert ms.local.stats()["total_requests"] == 0


# openai only: litellm's transport may drop the frames it buffered before an in-band error, so there the error can
# arrive before any byte was relayed (and failing over is then right); see test_resilience_streaming.
def test_a_moderation_stop_mid_stream_is_a_content_policy_error_event(ms: Resilience) -> None:
    ms.cloud.inject([{"fault": "inband_error", "after": 3, "count": 1, "model": PRIMARY_MODEL["openai"],
                      "message": MODERATION}])
    headers, lines = stream_lines(ms.client(), "chain-openai")
    assert headers["x-polyroute-deployment"] == "primary-openai"  # bytes had gone out: no failover
    assert output_of(lines[:-2]) and lines[-1] == "[DONE]"
    error = error_of(lines[-2])
    assert error["code"] == "content_policy_violation"
    assert "Output data may contain inappropriate content" in error["message"]
