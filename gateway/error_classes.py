"""Why an upstream attempt failed: its class, what each class means for retries and health, and its record."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorClass(StrEnum):
    """Why one upstream attempt failed; `fallback.on` lists the classes that move on to the next target."""

    RATE_LIMIT = "rate_limit"
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"
    CONNECTION_ERROR = "connection_error"
    CONTEXT_WINDOW = "context_window"
    CONTENT_POLICY = "content_policy"
    AUTH = "auth"
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    ACCOUNT = "account"  # arrears / AccessDenied: the operator's account, not the request; opens the circuit at once
    QUOTA_EXHAUSTED = "quota_exhausted"  # a quota that no retry restores (a spent free tier): opens the circuit at once
    RETIRED = "retired"  # 404/410: the model no longer exists (retired, deprecated): opens the circuit at once


# Failures another try (here or at the next target) may cure.
RETRYABLE = frozenset(
    {ErrorClass.RATE_LIMIT, ErrorClass.TIMEOUT, ErrorClass.SERVER_ERROR, ErrorClass.CONNECTION_ERROR}
)
# Failures that say something about the deployment's health, so they count toward its circuit breaker.
HEALTH_FAILURES = frozenset({ErrorClass.TIMEOUT, ErrorClass.SERVER_ERROR, ErrorClass.CONNECTION_ERROR})
# Failures that will repeat on every request until the operator acts: one opens the circuit for its cooldown.
TRIPPING_FAILURES = frozenset({ErrorClass.ACCOUNT, ErrorClass.QUOTA_EXHAUSTED, ErrorClass.RETIRED})
# Failures that are the request's own fault: when every target failed so, the client must change the request.
REQUEST_FAULTS = frozenset({ErrorClass.BAD_REQUEST, ErrorClass.CONTEXT_WINDOW, ErrorClass.CONTENT_POLICY})

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
CONTENT_POLICY_VIOLATION = "content_policy_violation"
# The OpenAI codes of the refusals a client can act on itself (shorten or compact the prompt, change its content).
REQUEST_FAULT_CODES = {
    ErrorClass.CONTEXT_WINDOW: CONTEXT_LENGTH_EXCEEDED,
    ErrorClass.CONTENT_POLICY: CONTENT_POLICY_VIOLATION,
}


@dataclass(frozen=True)
class AttemptFailure:
    """What one attempt's failure looked like, as reported to the client when all fail."""

    deployment: str
    error_class: ErrorClass
    message: str
    upstream_status: int | None = None
    skipped: bool = False  # not tried (open circuit, own rate limit, too small a window): says nothing new
    # Seconds until the target may answer: the upstream's Retry-After, or for a skipped target the time until its
    # own rate-limit window or its open circuit frees.
    retry_after: float | None = None
    context_window: int | None = None  # with CONTEXT_WINDOW: the window (configured) that was too small
