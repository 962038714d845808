"""The gateway fuzzed from its own /openapi.json (schemathesis) in front of the simulated upstreams.

Every operation of the document gets generated requests, valid and invalid; each answer must keep the contract:
no 5xx (no fault is injected, so no upstream causes one), a status, content type and body the document declares.
A body's `model` is often swapped for an alias of the policy, so that requests reach the upstreams too.

The run is reproducible (a fixed seed, no example database) and bounded: POLYROUTE_FUZZ_EXAMPLES examples per
operation (default 100); a hang is bounded by the request timeout. Run it longer with e.g.
`POLYROUTE_FUZZ_EXAMPLES=500 .venv/bin/python -m pytest tests/integration/test_openapi_fuzz.py -q`.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator

import openai
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.stack import Stack

SEED = 20261206
EXAMPLES = int(os.environ.get("POLYROUTE_FUZZ_EXAMPLES", "100"))
REQUEST_TIMEOUT_S = 30.0  # above the stack policy's total timeout (20 s): a hang fails, it never blocks the run
ALIASES = ("coder", "conf-openai", "conf-litellm", "cloud-only", "ollama", "embed-openai", "embed-litellm")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as made:
        yield made


def known_alias(body: object) -> None:
    """Most generated bodies name a random model (a 404): swap it for an alias, chosen by the body itself."""
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        slot = zlib.crc32(repr(sorted(body)).encode()) % (len(ALIASES) + 1)
        if slot < len(ALIASES):
            body["model"] = ALIASES[slot]


def fuzz(operation: APIOperation, base_url: str, session: requests.Session) -> None:
    """Valid and invalid requests for one operation; Hypothesis shrinks a failure to its smallest request."""
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def answers_by_contract(case: Case) -> None:
        known_alias(case.body)
        case.call_and_validate(
            base_url=base_url,
            session=session,
            headers={"authorization": "Bearer adm"},  # the admin key; any client key passes (no tenants declared)
            checks=CHECKS,
            timeout=REQUEST_TIMEOUT_S,
        )

    answers_by_contract()


@pytest.mark.timeout(max(120, EXAMPLES))  # a longer run gets the time it needs (pytest-timeout would cut it)
def test_every_answer_keeps_the_contract(stack: Stack, session: requests.Session) -> None:
    schema = schemathesis.openapi.from_url(stack.gateway.url("/openapi.json"), timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14, [op.label for op in operations]
    failures: list[str] = []
    for operation in operations:
        try:
            fuzz(operation, stack.gateway.url(""), session)
        except Exception as exc:  # every operation is fuzzed; each failure is reported with its operation
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


# --- what the fuzzing found, kept as plain tests ---
@pytest.mark.parametrize("value", [[[None, True], {"text": "hi"}], [], [[]]], ids=["mixed", "empty", "empty-ids"])
@pytest.mark.parametrize(("alias", "field"), [("conf-litellm", "prompt"), ("conf-openai", "prompt"),
                                              ("embed-litellm", "input"), ("embed-openai", "input")])
def test_a_prompt_or_input_of_no_openai_shape_is_the_clients_400(
    stack: Stack, alias: str, field: str, value: list[object]
) -> None:
    """Before, a litellm target refused it client-side and the client read a 503 'all targets failed'."""
    client = stack.client()
    create = client.completions.create if field == "prompt" else client.embeddings.create
    with pytest.raises(openai.BadRequestError) as caught:
        create(model=alias, **{field: value})  # type: ignore[call-overload]
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == field  # type: ignore[index]


@pytest.mark.parametrize("alias", ["conf-litellm", "conf-openai", "embed-openai"])
def test_an_image_request_to_an_alias_of_another_kind_is_the_clients_400(
    stack: Stack, session: requests.Session, alias: str
) -> None:
    """Found by fuzzing: an images body (with an object `response_format`) sent to a chat alias answered 500."""
    body = {"model": alias, "prompt": "r", "n": 8, "quality": "high", "size": None,
            "response_format": {"x": []}}
    answer = session.post(stack.gateway.url("/v1/images/generations"), json=body,
                          headers={"authorization": "Bearer adm"}, timeout=REQUEST_TIMEOUT_S)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid_request_error"
