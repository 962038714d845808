"""Anthropic clients through polyroute to Model Studio's Chat API: the Messages translation asks each Qwen model
only for the thinking it accepts, as the deployment's `thinking:` block says (driven with the `anthropic` client)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.support.processes import GatewayProcess, Upstream, start_gateway, start_simulated

CLOUD_KEY = "sk-sim-cloud-secret"
POLICY = """
version: 1
providers:
  modelstudio: {{type: openai, base_url: "{cloud}", api_key: "{key}", hosting: cloud, jurisdiction: sg,
                vendor: alibaba}}
deployments:
  hybrid:   {{provider: modelstudio, model: qwen3.6-plus,
             thinking: {{default: on, max_budget: 81920, preserve: true}}}}
  oss:      {{provider: modelstudio, model: qwen3-32b, thinking: {{default: on, stream_only: true, max_budget: 38912}}}}
  oss-bare: {{provider: modelstudio, model: qwen3-32b}}
aliases:
  hybrid:   {{targets: [hybrid]}}
  oss:      {{targets: [oss]}}
  oss-bare: {{targets: [oss-bare]}}
fallback:
  retries: {{attempts: 0}}
"""
HI: list[Any] = [{"role": "user", "content": "hello"}]
DEEP: Any = {"type": "enabled", "budget_tokens": 100000}  # above both models' maximum


@pytest.fixture(scope="module")
def chat_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Upstream]]:
    cloud = start_simulated("modelstudio", name="sim-cloud", api_key=CLOUD_KEY, chunks=4)
    try:
        path: Path = tmp_path_factory.mktemp("thinking") / "policy.yaml"
        path.write_text(POLICY.format(cloud=cloud.base_url, key=CLOUD_KEY))
        gateway = start_gateway(path)
        try:
            yield gateway, cloud
        finally:
            gateway.stop()
    finally:
        cloud.stop()


@pytest.fixture
def claude(chat_stack: tuple[GatewayProcess, Upstream]) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=chat_stack[0].base_url, api_key="any", max_retries=0) as client:
        yield client


def sent(chat_stack: tuple[GatewayProcess, Upstream]) -> dict[str, Any]:
    body: dict[str, Any] = chat_stack[1].stats()["last_body"]
    return body


def test_a_hybrid_model_does_not_think_when_the_client_did_not_ask(
    chat_stack: tuple[GatewayProcess, Upstream], claude: anthropic.Anthropic
) -> None:
    message = claude.messages.create(model="hybrid", max_tokens=256, messages=HI)
    assert [block.type for block in message.content] == ["text"]  # no thinking block, none billed
    assert sent(chat_stack)["enable_thinking"] is False
    asked = claude.messages.create(model="hybrid", max_tokens=256, messages=HI, thinking=DEEP)
    assert asked.content[0].type == "thinking"
    assert (sent(chat_stack)["enable_thinking"], sent(chat_stack)["thinking_budget"]) == (True, 81920)  # capped


def test_a_stream_only_model_answers_a_non_stream_call_instead_of_refusing_it(
    chat_stack: tuple[GatewayProcess, Upstream], claude: anthropic.Anthropic
) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:  # what Model Studio says without the deployment's block
        claude.messages.create(model="oss-bare", max_tokens=256, messages=HI, thinking=DEEP)
    assert "enable_thinking must be set to false for non-streaming calls" in info.value.message
    message = claude.messages.create(model="oss", max_tokens=256, messages=HI, thinking=DEEP)
    assert [block.type for block in message.content] == ["text"]
    assert sent(chat_stack)["enable_thinking"] is False and "thinking_budget" not in sent(chat_stack)


def test_a_stream_only_model_thinks_when_streamed_within_its_budget(
    chat_stack: tuple[GatewayProcess, Upstream], claude: anthropic.Anthropic
) -> None:
    with claude.messages.stream(model="oss", max_tokens=256, messages=HI, thinking=DEEP) as stream:
        kinds = [event.content_block.type for event in stream if event.type == "content_block_start"]
    assert kinds == ["thinking", "text"]
    assert (sent(chat_stack)["enable_thinking"], sent(chat_stack)["thinking_budget"]) == (True, 38912)


def test_earlier_turns_reasoning_reaches_a_model_that_must_be_asked_to_keep_it(
    chat_stack: tuple[GatewayProcess, Upstream], claude: anthropic.Anthropic
) -> None:
    first = claude.messages.create(model="hybrid", max_tokens=256, messages=HI, thinking=DEEP)
    history: list[Any] = [
        *HI,
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": "and again?"},
    ]
    claude.messages.create(model="hybrid", max_tokens=256, messages=history, thinking=DEEP)
    body = sent(chat_stack)
    assert body["preserve_thinking"] is True
    thought = next(block for block in first.content if block.type == "thinking")
    assert body["messages"][1]["reasoning_content"] == thought.thinking
