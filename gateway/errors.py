"""The one error hierarchy of polyroute; every class knows its HTTP status and OpenAI error type (`error_envelope`
builds the OpenAI error envelope, and its SSE event, every one of them is sent in).

    PolyrouteError                      (500, api_error)
    ├── PolicyError                     policy file could not be loaded; names the YAML path
    │   └── PolicyRejectedError         422 on POST /admin/reload: the running policy stays
    ├── ClientError                     the request is at fault, never retried
    │   ├── BadRequestError             400 invalid_request_error
    │   │   └── UpstreamRejectedError   400 the upstream refused the request itself (bad request, content
    │   │       │                           policy, context window) and no fallback applies
    │   │       ├── UpstreamRejectedTooLargeError     413 as the upstream answered
    │   │       └── UpstreamRejectedUnprocessableError 422 as the upstream answered
    │   ├── AuthenticationError         401 authentication_error
    │   ├── PermissionDeniedError       403 permission_error (model not allowed for tenant)
    │   ├── NotFoundError               404 not_found_error (unknown alias / route)
    │   ├── MethodNotAllowedError       405 invalid_request_error (+ Allow)
    │   ├── RequestTimeoutError         408 invalid_request_error (headers or body too slow to arrive)
    │   ├── RequestTooLargeError        413 invalid_request_error
    │   ├── NoEligibleTargetError       400 invalid_request_error (every target excluded by a rule)
    │   └── LimitExceededError          429 rate_limit_error (+ Retry-After)
    │       └── BudgetExceededError     429 insufficient_quota (a daily or monthly budget)
    ├── AllCircuitsOpenError            503 every target the rules allow has an open circuit (an outage)
    ├── TierSaturatedError              503 (+ Retry-After) every tier allowed is saturated and stayed so
    ├── StateUnavailableError           503 the state store is unreachable and the failure mode is `closed`
    ├── UpstreamError                   one attempt against one deployment failed (classified)
    ├── AllTargetsFailedError           502 every attempt failed; lists each cause. Constructed as the subclass
    │   │                                   whose status the client can act on:
    │   ├── AllRefusedError             400 context_length_exceeded / content_policy_violation /
    │   │                                   upstream_rejected_request: every target refused the request itself
    │   ├── AllRateLimitedError         429 (+ Retry-After) every target was rate-limited
    │   ├── AllTimedOutError            504 every target tried timed out
    │   └── AllUnavailableError         503 (+ Retry-After) unreachable or throttled, or none could be tried
    ├── ShuttingDownError               503 the gateway is draining and the shutdown deadline passed
    ├── TooManyConnectionsError         503 the process holds its maximum of client connections
    └── ClientGoneError                 499 the client disconnected; the upstream request was cancelled
"""

from __future__ import annotations

import math

from gateway.error_classes import (
    CONTENT_POLICY_VIOLATION,
    CONTEXT_LENGTH_EXCEEDED,
    REQUEST_FAULT_CODES,
    REQUEST_FAULTS,
    AttemptFailure,
    ErrorClass,
)


class PolyrouteError(Exception):
    """Base of every error polyroute raises on purpose."""

    status = 500
    error_type = "api_error"
    code: str | None = None
    # With code `context_length_exceeded`: the largest context window (configured) of a target that refused the
    # prompt as too long, which Anthropic's wording of the error names.
    context_window: int | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        return {}


class PolicyError(PolyrouteError):
    """A policy file is invalid; the message names the YAML path of each problem."""

    code = "invalid_policy"

    def __init__(self, problems: list[str], source: str = "policy") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(problems))


class PolicyRejectedError(PolicyError):
    """POST /admin/reload read an invalid policy: the running one stays, the caller learns each problem."""

    status = 422
    error_type = "invalid_request_error"


class ClientError(PolyrouteError):
    """The request itself is at fault; retrying it elsewhere cannot help."""


class BadRequestError(ClientError):
    status = 400
    error_type = "invalid_request_error"


class AuthenticationError(ClientError):
    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(ClientError):
    status = 403
    error_type = "permission_error"
    code = "model_not_allowed"


class NotFoundError(ClientError):
    status = 404
    error_type = "not_found_error"
    code = "model_not_found"


class MethodNotAllowedError(ClientError):
    """A known path asked with a method it does not answer; `Allow` names the ones it does."""

    status = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: str | None = None) -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"allow": self.allow} if self.allow else {}


class RequestTimeoutError(ClientError):
    status = 408
    error_type = "invalid_request_error"
    code = "request_timeout"


class RequestTooLargeError(ClientError):
    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"

    def headers(self) -> dict[str, str]:
        return {"connection": "close"}  # the rest of the body is read and dropped (bounded), then the connection closed


class NoEligibleTargetError(ClientError):
    status = 400
    error_type = "invalid_request_error"
    code = "no_eligible_target"


class UpstreamRejectedError(BadRequestError):
    """The chosen deployment refused the request itself; relayed to the client, not retried elsewhere."""

    code = "upstream_rejected_request"

    def __init__(self, message: str, *, error_class: ErrorClass, context_window: int | None = None) -> None:
        super().__init__(message, code=REQUEST_FAULT_CODES.get(error_class))
        self.context_window = context_window


class UpstreamRejectedTooLargeError(UpstreamRejectedError):
    status = 413


class UpstreamRejectedUnprocessableError(UpstreamRejectedError):
    status = 422


class LimitExceededError(ClientError):
    status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        code: str | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
        self.extra_headers = extra_headers or {}

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(max(1, int(self.retry_after + 0.999))), **self.extra_headers}


class BudgetExceededError(LimitExceededError):
    """A tenant's daily or monthly budget would be exceeded: OpenAI's `insufficient_quota`."""

    error_type = "insufficient_quota"
    code = "insufficient_quota"


class AllCircuitsOpenError(PolyrouteError):
    """Every target that the rules allow has an open circuit: a temporary outage, not the caller's fault."""

    status = 503
    code = "all_targets_unavailable"


class StateUnavailableError(PolyrouteError):
    """The shared store cannot be reached and the failure mode is `closed`."""

    status = 503
    code = "state_store_unavailable"


UNSUPPORTED_CAPABILITY = "unsupported_capability"  # no target of the alias can do what the request needs (audio_out)


class UpstreamError(PolyrouteError):
    """One attempt against one deployment failed; `error_class` decides retry and fallback."""

    status = 502

    def __init__(
        self,
        message: str,
        *,
        error_class: ErrorClass,
        upstream_status: int | None = None,
        retry_after: float | None = None,
        body: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        self.body = body


class AllTargetsFailedError(PolyrouteError):
    """Every attempt of a plan failed; the message lists each target and its cause.

    Constructing it gives the subclass whose status the client can act on (the README's table): 400 when every
    target refused the request itself (`content_policy_violation` before `context_length_exceeded`: a shorter prompt
    would still be refused), 429 with `Retry-After` when every other target was rate-limited (by the upstream or by
    its own limit; open circuits only add their wait), else what the upstreams' failures say of the operator's side:
    504 when all timed out, 503 when they were unreachable or throttled, 502 otherwise.
    """

    status = 502
    code = "upstream_error"

    def __new__(cls, failures: list[AttemptFailure]) -> AllTargetsFailedError:
        kind = _failed_kind(failures) if cls is AllTargetsFailedError else cls
        error: AllTargetsFailedError = super().__new__(kind, failures)
        return error

    def __init__(self, failures: list[AttemptFailure]) -> None:
        self.failures = failures
        parts = "; ".join(
            f"{f.deployment}: {f.error_class.value}"
            + (f" (upstream status {f.upstream_status})" if f.upstream_status else "")
            + (f": {f.message}" if f.message else "")
            for f in failures
        )
        waits = [f.retry_after for f in failures if f.error_class not in REQUEST_FAULTS and f.retry_after is not None]
        self.retry_after = min(waits) if waits else None
        lead = self._lead(failures)
        super().__init__(f"{lead}: {parts}" if parts else "no target was tried", code=self.code)

    def _lead(self, failures: list[AttemptFailure]) -> str:
        """The message's opening words (a subclass also settles what its kind of failure adds)."""
        return "all targets failed"

    def headers(self) -> dict[str, str]:
        """A 429 or 503 passes on the shortest wait a target asked for, so clients back off as long as needed."""
        if self.status not in (429, 503) or self.retry_after is None:
            return {}
        return {"retry-after": str(_seconds(self.retry_after))}


class AllRefusedError(AllTargetsFailedError):
    """Every target refused the request itself: the code names the refusal."""

    status = 400
    error_type = "invalid_request_error"

    def _lead(self, failures: list[AttemptFailure]) -> str:
        classes = {f.error_class for f in failures}
        if ErrorClass.CONTENT_POLICY in classes:
            self.code = CONTENT_POLICY_VIOLATION
            return "every target refused the request under its content policy"
        if ErrorClass.CONTEXT_WINDOW in classes:
            self.code = CONTEXT_LENGTH_EXCEEDED
            windows = [f.context_window for f in failures if f.context_window is not None]
            self.context_window = max(windows) if windows else None
            return "the prompt is too long for every target"
        self.code = UpstreamRejectedError.code
        return "every target rejected the request"


class AllRateLimitedError(AllTargetsFailedError):
    status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def _lead(self, failures: list[AttemptFailure]) -> str:
        self.retry_after = self.retry_after if self.retry_after is not None else 1.0
        return f"every target is rate-limited; try again in {_seconds(self.retry_after)}s"


class AllTimedOutError(AllTargetsFailedError):
    status = 504
    code = "upstream_timeout"


class AllUnavailableError(AllTargetsFailedError):
    status = 503
    code = "upstream_unavailable"


def _failed_kind(failures: list[AttemptFailure]) -> type[AllTargetsFailedError]:
    """Which failure the client is told of; targets that were only skipped do not change the operator-side kind."""
    others = [f for f in failures if f.error_class not in REQUEST_FAULTS]
    if failures and not others:
        return AllRefusedError
    if any(f.error_class is ErrorClass.RATE_LIMIT for f in others) and all(
        f.error_class is ErrorClass.RATE_LIMIT or (f.skipped and f.retry_after is not None) for f in others
    ):
        return AllRateLimitedError
    classes = {f.error_class for f in others if not f.skipped}
    if not classes:
        return AllUnavailableError
    if classes <= {ErrorClass.TIMEOUT}:
        return AllTimedOutError
    if classes <= {ErrorClass.RATE_LIMIT, ErrorClass.CONNECTION_ERROR}:
        return AllUnavailableError
    return AllTargetsFailedError


def _seconds(wait: float) -> int:
    """A wait as Retry-After says it: whole seconds, rounded up, at least one."""
    return max(1, math.ceil(wait))


SATURATED_CODE = "tier_saturated"


class TierSaturatedError(PolyrouteError):
    """Every tier a request may use is above its `high` mark and the alias says `on_saturation: queue`.

    The proxy waits up to `max_wait_s` for the tier to drain and decides again; if it does not, the client gets
    this error: 503 with Retry-After.
    """

    status = 503
    error_type = "api_error"
    code = SATURATED_CODE

    def __init__(self, message: str, *, alias: str, tier: int, max_wait_s: float) -> None:
        super().__init__(message, param="model")
        self.alias = alias
        self.tier = tier
        self.max_wait_s = max_wait_s
        self.retry_after = 1.0

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(max(1, int(self.retry_after + 0.999)))}


class ShuttingDownError(PolyrouteError):
    """The gateway is shutting down and this request outlived the drain deadline."""

    status = 503
    code = "gateway_shutting_down"

    def __init__(self) -> None:
        super().__init__("The gateway is shutting down and the request did not finish before its drain deadline.")

    def headers(self) -> dict[str, str]:
        return {"connection": "close"}


class TooManyConnectionsError(PolyrouteError):
    """A connection beyond POLYROUTE_MAX_CONNECTIONS: answered at once and closed, before any request is read."""

    status = 503
    code = "too_many_connections"

    def headers(self) -> dict[str, str]:
        return {"retry-after": "1"}


class ClientGoneError(PolyrouteError):
    """The client disconnected before the answer was ready (nobody reads the 499; it is for metrics and usage)."""

    status = 499
    code = "client_closed_request"

    def __init__(self) -> None:
        super().__init__("The client closed the connection before the answer was ready.")

