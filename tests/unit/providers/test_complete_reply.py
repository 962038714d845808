"""Which 200 answers are complete, and what an incomplete one is as a failure (it decides fallback)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.error_classes import ErrorClass
from gateway.providers.base import Endpoint
from gateway.providers.complete_reply import incomplete_reply

CHOICE = {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}


@pytest.mark.parametrize(
    ("endpoint", "data"),
    [
        (Endpoint.CHAT, {"choices": [CHOICE]}),
        (Endpoint.COMPLETION, {"choices": [{"index": 0, "text": "x", "finish_reason": "length"}]}),
        (Endpoint.EMBEDDING, {"object": "list", "data": []}),
        (Endpoint.MESSAGES, {"type": "message", "content": [], "stop_reason": "end_turn", "usage": {}}),
        (Endpoint.RESPONSES, {"object": "response", "status": "incomplete", "output": []}),
    ],
)
def test_a_complete_answer_passes(endpoint: Endpoint, data: dict[str, Any]) -> None:
    assert incomplete_reply(endpoint, data) is None


def test_a_throttling_error_object_with_200_is_still_a_rate_limit() -> None:
    failure = incomplete_reply(Endpoint.RESPONSES, {"error": {"code": "Throttling", "message": "Requests throttled"}})
    assert failure is not None and failure.error_class is ErrorClass.RATE_LIMIT
    assert failure.message == "upstream answered 200 with an error: Throttling: Requests throttled"


def test_a_failed_response_is_its_error_even_though_it_has_status_and_output() -> None:
    failed = {"object": "response", "status": "failed", "output": [], "error": {"code": "server_error", "message": "x"}}
    failure = incomplete_reply(Endpoint.RESPONSES, failed)
    assert failure is not None and failure.error_class is ErrorClass.SERVER_ERROR


@pytest.mark.parametrize(
    ("endpoint", "data", "words"),
    [
        (Endpoint.CHAT, [], "chat completion that is not a JSON object"),
        (Endpoint.CHAT, {"choices": [{**CHOICE, "finish_reason": None}]}, "without a finish_reason"),
        (Endpoint.CHAT, {"choices": [{"index": 0, "finish_reason": "stop"}]}, "a choice without a message"),
        (Endpoint.EMBEDDING, {"object": "list"}, "embeddings list that has no data"),
        (Endpoint.IMAGE, {"created": 1}, "images response that has no data"),
        (Endpoint.IMAGE_EDIT, {"created": 1, "data": None}, "images response that has no data"),
        (Endpoint.MESSAGES, {"type": "message", "stop_reason": "end_turn", "usage": {}}, "has no content"),
    ],
)
def test_an_incomplete_answer_is_a_server_error_naming_what_is_missing(
    endpoint: Endpoint, data: Any, words: str
) -> None:
    failure = incomplete_reply(endpoint, data)
    assert failure is not None and failure.error_class is ErrorClass.SERVER_ERROR
    assert words in failure.message


@pytest.mark.parametrize("endpoint", [Endpoint.IMAGE, Endpoint.IMAGE_EDIT])
def test_an_images_response_with_data_is_complete(endpoint: Endpoint) -> None:
    assert incomplete_reply(endpoint, {"created": 1, "data": [{"url": "http://127.0.0.1/x.png"}]}) is None
