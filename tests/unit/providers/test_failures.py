"""Error classification: every upstream failure, as Model Studio, vLLM and Ollama word it, gets one ErrorClass."""

from __future__ import annotations

import orjson
import pytest

from gateway.demo.sim_flavors import FLAVORS
from gateway.error_classes import ErrorClass
from gateway.providers.failures import inband_error, parse_retry_after, status_prefix, upstream_error

NAMED = {
    "throttling": ErrorClass.RATE_LIMIT,
    "insufficient_quota": ErrorClass.RATE_LIMIT,  # Model Studio's per-minute quota wording: retryable
    "data_inspection": ErrorClass.CONTENT_POLICY,
    "context_overflow": ErrorClass.CONTEXT_WINDOW,
    "invalid_key": ErrorClass.AUTH,
    "internal": ErrorClass.SERVER_ERROR,
    "arrearage": ErrorClass.ACCOUNT,
    "quota_exhausted": ErrorClass.QUOTA_EXHAUSTED,
}


@pytest.mark.parametrize("flavor", sorted(FLAVORS))
@pytest.mark.parametrize("named", sorted(NAMED))
def test_each_flavors_own_error_bodies(flavor: str, named: str) -> None:
    error = FLAVORS[flavor].errors[named]
    failure = upstream_error(error.status, FLAVORS[flavor].error_body(error), None, "d")
    assert failure.error_class is NAMED[named]
    assert failure.upstream_status == error.status


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, ErrorClass.BAD_REQUEST),
        (403, ErrorClass.AUTH),
        (404, ErrorClass.NOT_FOUND),
        (408, ErrorClass.TIMEOUT),
        (422, ErrorClass.BAD_REQUEST),
        (429, ErrorClass.RATE_LIMIT),
        (500, ErrorClass.SERVER_ERROR),
        (502, ErrorClass.SERVER_ERROR),
        (503, ErrorClass.SERVER_ERROR),
        (504, ErrorClass.TIMEOUT),
    ],
)
def test_plain_statuses(status: int, expected: ErrorClass) -> None:
    body = orjson.dumps({"error": {"message": "something went wrong", "type": "x", "code": None}})
    assert upstream_error(status, body, None, "d").error_class is expected


def test_model_studio_throttling_codes_are_rate_limits_whatever_the_status() -> None:
    body = orjson.dumps({"error": {"message": "Allocated quota exceeded", "code": "Throttling.AllocationQuota"}})
    assert upstream_error(400, body, None, "d").error_class is ErrorClass.RATE_LIMIT


def test_unreadable_body_still_classified_by_status_and_keeps_its_words() -> None:
    failure = upstream_error(502, b"<html>Bad Gateway</html>", None, "d")
    assert failure.error_class is ErrorClass.SERVER_ERROR
    assert "Bad Gateway" in failure.message


def test_retry_after_is_read() -> None:
    failure = upstream_error(429, b"{}", "3", "d")
    assert failure.retry_after == 3.0
    assert parse_retry_after("soon") is None and parse_retry_after("-1") is None and parse_retry_after(None) is None


@pytest.mark.parametrize("flavor", sorted(FLAVORS))
@pytest.mark.parametrize("named", ["data_inspection", "context_overflow", "throttling", "internal"])
def test_inband_frames_are_classified_by_their_words(flavor: str, named: str) -> None:
    payload = FLAVORS[flavor].payload(FLAVORS[flavor].errors[named])
    frame = payload if "error" in payload else {"error": payload}
    failure = inband_error(frame)
    assert failure is not None
    assert failure.error_class is NAMED[named]


def test_inband_frame_with_an_http_status_code_uses_it() -> None:
    vllm = {"error": {"object": "error", "message": "bad value for top_p", "type": "BadRequestError", "code": 400}}
    failure = inband_error(vllm)
    assert failure is not None and failure.error_class is ErrorClass.BAD_REQUEST
    failure = inband_error({"error": {"message": "upstream request timed out"}})
    assert failure is not None and failure.error_class is ErrorClass.TIMEOUT


def test_chunks_without_an_error_are_not_errors() -> None:
    assert inband_error({"choices": [{"delta": {"content": "hi"}}]}) is None
    assert inband_error({"error": None, "choices": []}) is None
    assert inband_error(["not", "a", "dict"]) is None



def _model_studio(message: str, code: str, err_type: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": err_type or code, "param": None, "code": code},
                         "request_id": "r"})


ARREARAGE = "Access denied, please make sure your account is in good standing."


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, _model_studio(ARREARAGE, "Arrearage")),  # the docs' table and the issue reports
        (403, _model_studio(ARREARAGE, "Arrearage")),  # newer pages: under 403 AccessDenied
        (403, _model_studio("Access denied.", "AccessDenied")),
        (403, _model_studio("Access to model denied.", "AccessDenied.Unpurchased")),
    ],
)
def test_an_account_in_arrears_or_denied_is_the_operators_failure(status: int, body: bytes) -> None:
    assert upstream_error(status, body, None, "d").error_class is ErrorClass.ACCOUNT


def test_a_spent_free_quota_is_permanent_but_the_per_minute_quota_is_a_rate_limit() -> None:
    spent = _model_studio("Free allocated quota exceeded.", "Throttling.AllocationQuota")
    assert upstream_error(429, spent, None, "d").error_class is ErrorClass.QUOTA_EXHAUSTED
    per_minute = _model_studio("Allocated quota exceeded, please increase your quota limit.",
                               "Throttling.AllocationQuota")
    assert upstream_error(429, per_minute, None, "d").error_class is ErrorClass.RATE_LIMIT
    rate = _model_studio("Requests rate limit exceeded, please try again later.", "Throttling.RateQuota")
    assert upstream_error(429, rate, None, "d").error_class is ErrorClass.RATE_LIMIT


def test_a_plain_forbidden_is_still_auth() -> None:
    body = orjson.dumps({"error": {"message": "Forbidden", "type": "permission_error", "code": None}})
    assert upstream_error(403, body, None, "d").error_class is ErrorClass.AUTH


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("<400> InternalError.Algo.InvalidParameter: Range of input length should be [1, 983616]",
         ErrorClass.CONTEXT_WINDOW),
        ("<400> InternalError.Algo.DataInspectionFailed: Output data may contain inappropriate content.",
         ErrorClass.CONTENT_POLICY),
        ("<400> InternalError.Algo.InvalidParameter: The value of top_p must be in (0, 1]", ErrorClass.BAD_REQUEST),
        ("<429> Throttling.RateQuota: Requests rate limit exceeded", ErrorClass.RATE_LIMIT),
        ("<500> InternalError.Algo: An internal error has occured", ErrorClass.SERVER_ERROR),
        (ARREARAGE, ErrorClass.ACCOUNT),
    ],
)
def test_inband_messages_are_classified_by_their_leading_status_and_code(message: str, expected: ErrorClass) -> None:
    failure = inband_error({"error": {"message": message, "type": "internal_error", "code": "InternalError"}})
    assert failure is not None and failure.error_class is expected


def test_an_inband_refusal_names_itself_in_its_code() -> None:
    message = "<400> InternalError.Algo.DataInspectionFailed: Output data may contain inappropriate content."
    failure = inband_error({"error": {"message": message, "code": "data_inspection_failed"}})
    assert failure is not None and failure.code == "content_policy_violation"
    plain = inband_error({"error": {"message": "An internal error has occured", "code": "InternalError"}})
    assert plain is not None and plain.code is None


def test_status_prefix_is_read_only_at_the_start() -> None:
    assert status_prefix("<400> InternalError.Algo.InvalidParameter: x") == 400
    assert status_prefix("  <503> x") == 503
    assert status_prefix("the <400> is not first") is None
    assert status_prefix("<999> nope") is None


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, {"error": {"message": "The model `qwen-x` does not exist or you do not have access to it.",
                         "type": "invalid_request_error", "code": "model_not_found"}}, ErrorClass.RETIRED),
        (410, {"error": {"message": "The model has been deprecated.", "code": "model_deprecated"}}, ErrorClass.RETIRED),
        (404, {"error": {"message": "The model qwen-x was decommissioned on 2026-01-01."}}, ErrorClass.RETIRED),
        (404, {"detail": "Not Found"}, ErrorClass.NOT_FOUND),  # a wrong path names no model
        (400, {"error": {"message": "The model `x` does not exist", "code": "x"}}, ErrorClass.BAD_REQUEST),
    ],
)
def test_a_model_that_no_longer_exists_is_retired(status: int, body: object, expected: ErrorClass) -> None:
    assert upstream_error(status, orjson.dumps(body), None, "d").error_class is expected
