"""The OpenAI error envelopes polyroute writes itself, against OpenAI's published `ErrorResponse` schema."""

from __future__ import annotations

import orjson
import pytest

from gateway.error_classes import AttemptFailure, ErrorClass
from gateway.error_envelope import error_body, error_event
from gateway.errors import (
    AllTargetsFailedError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ClientGoneError,
    NoEligibleTargetError,
    NotFoundError,
    PermissionDeniedError,
    PolicyError,
    PolyrouteError,
    RequestTooLargeError,
    ShuttingDownError,
    UpstreamRejectedError,
)
from tests.support.openai_schema import schema_errors

ERRORS: list[PolyrouteError] = [
    BadRequestError("'messages' must be a non-empty array.", param="messages"),
    AuthenticationError("Incorrect API key provided."),
    PermissionDeniedError("Tenant 'a' may not use the model 'b'.", param="model"),
    NotFoundError("The model 'x' does not exist.", param="model"),
    RequestTooLargeError("The body is over 10 MiB."),
    NoEligibleTargetError("No deployment may serve this request.", param="model"),
    UpstreamRejectedError("the upstream rejected the request", error_class=ErrorClass.CONTEXT_WINDOW,
                          context_window=8000),
    BudgetExceededError("Daily budget exceeded.", retry_after=60),
    AllTargetsFailedError([AttemptFailure("a", ErrorClass.RATE_LIMIT, "Throttling", 429, retry_after=3)]),
    AllTargetsFailedError([AttemptFailure("a", ErrorClass.CONTEXT_WINDOW, "too long", 400, context_window=8000)]),
    AllTargetsFailedError([AttemptFailure("a", ErrorClass.TIMEOUT, "no first token in 15s")]),
    ShuttingDownError(),
    ClientGoneError(),
    PolicyError(["aliases.coder.targets[1]: unknown deployment 'qwen-lcoal'"]),
    PolyrouteError("unexpected"),
]


@pytest.mark.parametrize("err", ERRORS, ids=lambda err: type(err).__name__)
def test_every_error_envelope_matches_the_published_schema(err: PolyrouteError) -> None:
    body = orjson.loads(orjson.dumps(error_body(err)))
    assert schema_errors("ErrorResponse", body) == []
    assert body["error"]["message"] == err.message
    event = error_event(err)
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert schema_errors("ErrorResponse", orjson.loads(event[len(b"data: "):])) == []
