"""A provider's failures in polyroute's terms: an upstream's status and error body classified into an ErrorClass
(which decides retry and fallback), and the transport's exceptions mapped to UpstreamError in one place."""

from __future__ import annotations

import re
from typing import Any

import orjson

from gateway.error_classes import REQUEST_FAULT_CODES, ErrorClass
from gateway.errors import UpstreamError
from gateway.providers.http1_head import InvalidHeader
from gateway.providers.http1_wire import AnswerRefused, ConnectTimeout

_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "context window",
    "range of input length",
    "input length should be",
    "prompt is too long",
    "too many tokens",
    "reduce the length",
)
_CONTENT_MARKERS = (
    "datainspectionfailed",
    "data_inspection_failed",
    "content_policy",
    "content_filter",
    "inappropriate content",
    "safety system",
)
# The operator's account is refused, whatever the request: Model Studio's `Arrearage` ("Access denied, please make
# sure your account is in good standing", HTTP 400; newer pages file it under 403 `AccessDenied`) and its other
# `AccessDenied` answers. https://help.aliyun.com/en/model-studio/error-code-start (403 AccessDenied, Arrearage)
_ACCOUNT_MARKERS = (
    "arrearage",
    "accessdenied",
    "access_denied",
    "account is in good standing",
    "overdue payment",
    "account_deactivated",
    "billing_not_active",
)
# A quota that no retry restores: Model Studio's spent free tier ("Free allocated quota exceeded", permanent while
# the account is in free-tier-only mode). Its plain "Allocated quota exceeded" / "You exceeded your current quota"
# (code Throttling.AllocationQuota / insufficient_quota) is the per-minute token limit and stays a rate limit:
# https://www.alibabacloud.com/help/en/model-studio/rate-limit ("Why is rate limiting triggered?").
_QUOTA_EXHAUSTED_MARKERS = (
    "free allocated quota exceeded",
    "free tier of the model has been exhausted",
    "freetieronly",
)
# Model Studio puts the status it means and its own code before the words of in-band errors and of some bodies:
# "<400> InternalError.Algo.InvalidParameter: Range of input length should be [1, 983616]"; the code is in the
# words the markers read. https://help.aliyun.com/en/model-studio/error-code (the `<400>` messages)
_STATUS_PREFIX = re.compile(r"<([1-5]\d\d)>")
# In-band frames carry no HTTP status; their wording says what happened.
_RATE_MARKERS = ("throttling", "rate limit", "too many requests", "insufficient_quota", "server busy")
_TIMEOUT_MARKERS = ("timeout", "timed out")
# A 404/410 whose words name the model as gone: Model Studio's `model_not_found` ("The model `x` does not exist"),
# OpenAI's `model_not_found`, deprecation notices. A 404 without them (a wrong path) stays not_found.
_RETIRED_MARKERS = ("model_not_found", "does not exist", "deprecat", "decommission", "retired", "no longer")


def error_fields(body: bytes) -> tuple[str, str]:
    """(message, code) from an OpenAI-, Model Studio- or vLLM-shaped error body; empty when unreadable."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode("utf-8", "replace").strip(), ""
    return error_fields_of(data)


def error_fields_of(data: Any) -> tuple[str, str]:
    if not isinstance(data, dict):
        return "", ""
    err = data.get("error", data)
    if isinstance(err, str):
        return err[:300], str(data.get("code") or "")
    if not isinstance(err, dict):
        return "", ""
    message = str(err.get("message") or "")[:300]
    code = err.get("code") or err.get("type") or data.get("code") or ""
    return message, str(code)


def classify_status(status: int | None, message: str, code: str) -> ErrorClass:
    """The class of a failure from its HTTP status (None for an in-band frame) and the upstream's words.

    An account or a spent quota is named by its words whatever the status (Model Studio answers arrears with 400);
    then a status that names the failure (429, 401/403) wins; next the words, because upstreams send
    context-window and content-policy refusals (Model Studio's `DataInspectionFailed`) as 400, and some as 500;
    then the status. An in-band message's leading `<NNN> Code:` stands for the status it has not got.
    """
    text = f"{code} {message}".lower()
    if status is None and "<" in message:
        status = status_prefix(message)
    if any(marker in text for marker in _ACCOUNT_MARKERS):
        return ErrorClass.ACCOUNT
    if any(marker in text for marker in _QUOTA_EXHAUSTED_MARKERS):
        return ErrorClass.QUOTA_EXHAUSTED
    if status == 429 or "throttling" in text:
        return ErrorClass.RATE_LIMIT  # Model Studio's per-minute `insufficient_quota` is a 429 too: retryable
    if status in (401, 403):
        return ErrorClass.AUTH
    if status in (404, 410) and any(marker in text for marker in _RETIRED_MARKERS):
        return ErrorClass.RETIRED
    if any(marker in text for marker in _CONTEXT_MARKERS):
        return ErrorClass.CONTEXT_WINDOW
    if any(marker in text for marker in _CONTENT_MARKERS):
        return ErrorClass.CONTENT_POLICY
    if status is None:
        if any(marker in text for marker in _RATE_MARKERS):
            return ErrorClass.RATE_LIMIT
        if any(marker in text for marker in _TIMEOUT_MARKERS):
            return ErrorClass.TIMEOUT
        return ErrorClass.SERVER_ERROR
    if status in (408, 504):
        return ErrorClass.TIMEOUT
    if status >= 500:
        return ErrorClass.SERVER_ERROR
    if status == 404:
        return ErrorClass.NOT_FOUND
    return ErrorClass.BAD_REQUEST


def status_prefix(message: str) -> int | None:
    """The status of a leading `<NNN>` (Model Studio's in-band form), None when the message has none."""
    match = _STATUS_PREFIX.match(message.lstrip())
    return int(match.group(1)) if match else None


def upstream_error(status: int, body: bytes, retry_after: str | None, deployment: str) -> UpstreamError:
    """Turn an upstream's non-2xx answer into a classified UpstreamError."""
    message, code = error_fields(body)
    error_class = classify_status(status, message, code)
    detail = f"{code}: {message}" if code else message
    return UpstreamError(
        detail or f"upstream answered HTTP {status}",
        error_class=error_class,
        upstream_status=status,
        retry_after=parse_retry_after(retry_after),
        body=body,
    )


def inband_error(payload: Any) -> UpstreamError | None:
    """An error frame inside an HTTP 200 stream (`data: {"error": ...}`), classified; None if not one."""
    if not isinstance(payload, dict) or "error" not in payload or payload.get("error") is None:
        return None
    message, code = error_fields_of(payload)
    err = payload["error"]
    status: int | None = None  # vLLM puts the HTTP status it would have sent in `code`
    if isinstance(err, dict) and isinstance(err.get("code"), int):
        status = err["code"]
    elif isinstance(payload.get("code"), int):
        status = payload["code"]
    if status is not None and not 400 <= status <= 599:
        status = None
    error_class = classify_status(status, message, code)
    failure = UpstreamError(
        f"in-stream error: {code + ': ' if code else ''}{message}",
        error_class=error_class,
        upstream_status=None,
    )
    if error_class in REQUEST_FAULT_CODES:  # a stop after the first byte tells the client which refusal it was,
        failure.code = REQUEST_FAULT_CODES[error_class]  # in OpenAI's words, as a refusal before it would

    return failure


def task_failure(state: str, code: str, message: str) -> UpstreamError:
    """A Model Studio image task that ended without images (FAILED, CANCELED, UNKNOWN), classified by its code and
    words as an in-band error is (`DataInspectionFailed`: content policy, `Throttling`: rate limit); anything else is
    a server error, so that another target may still succeed."""
    error_class = classify_status(None, message, code)
    failure = UpstreamError(
        f"image task {state}: {code + ': ' if code else ''}{message or 'no reason given'}"[:400],
        error_class=error_class,
    )
    if error_class in REQUEST_FAULT_CODES:
        failure.code = REQUEST_FAULT_CODES[error_class]
    return failure


def stream_event(payload: bytes) -> dict[str, Any]:
    """One SSE event's JSON object; a malformed one is a server_error (it fails over before the first byte)."""
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("malformed JSON in event stream", error_class=ErrorClass.SERVER_ERROR) from exc
    if not isinstance(event, dict):
        raise UpstreamError("malformed event in stream", error_class=ErrorClass.SERVER_ERROR)
    return event


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


# What the fast path's own HTTP/1.1 client (providers/http1.py) raises; `transport_failure` maps each.
TRANSPORT_ERRORS = (TimeoutError, ConnectionError, InvalidHeader)


def transport_failure(
    exc: TimeoutError | ConnectionError | InvalidHeader, *, timed_out: str, broke: str = "connection failed",
    connect_s: float = 0.0,
) -> UpstreamError:
    """The one mapping of the fast path's transport exceptions to classified UpstreamErrors (as httpx's
    `map_exceptions`): `timed_out` says which deadline passed, `broke` what was under way when the connection broke."""
    if isinstance(exc, ConnectTimeout):
        return UpstreamError(f"could not connect within the connect timeout of {connect_s:g}s",
                             error_class=ErrorClass.TIMEOUT)
    if isinstance(exc, TimeoutError):
        return UpstreamError(timed_out, error_class=ErrorClass.TIMEOUT)
    if isinstance(exc, AnswerRefused):  # past a size limit, or a switch of protocols: another upstream may not
        return UpstreamError(f"unacceptable upstream answer: {exc}", error_class=ErrorClass.SERVER_ERROR)
    if isinstance(exc, ConnectionError):
        return UpstreamError(f"{broke}: {exc}", error_class=ErrorClass.CONNECTION_ERROR)
    return UpstreamError(str(exc), error_class=ErrorClass.BAD_REQUEST)
