"""Every target of a plan failed: each attempt's failure and the error (a branch of errors.py's tree) it ends in."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gateway.errors import (
    CONTENT_POLICY_VIOLATION,
    CONTEXT_LENGTH_EXCEEDED,
    ErrorClass,
    PolyrouteError,
    UpstreamRejectedError,
)


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


# Failures that are the request's own fault: when every target failed so, the client must change the request.
_REQUEST_FAULTS = frozenset({ErrorClass.BAD_REQUEST, ErrorClass.CONTEXT_WINDOW, ErrorClass.CONTENT_POLICY})


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
        waits = [f.retry_after for f in failures if f.error_class not in _REQUEST_FAULTS and f.retry_after is not None]
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
    others = [f for f in failures if f.error_class not in _REQUEST_FAULTS]
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
