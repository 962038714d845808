"""Which client protocols a provider speaks natively, and where: `protocols` and `base_urls` in a policy."""

from __future__ import annotations

import pytest

from gateway.errors import PolicyError
from gateway.policy.loader import describe_policy, load_policy_text
from gateway.policy.pricing import CurrencyRates
from gateway.policy.table import Protocol

FX = CurrencyRates(usd_per_cny=0.14, usd_per_eur=1.08)

POLICY = """
version: 1
providers:
  modelstudio:
    type: openai
    base_url: https://dashscope-intl.aliyuncs.com/compatible-mode/v1
    hosting: cloud
    jurisdiction: sg
    vendor: alibaba
{extra}
deployments:
  qwen: {{provider: modelstudio, model: qwen3.6-plus, price: {{input_per_mtok: 1, output_per_mtok: 1}}}}
aliases:
  coder: {{targets: [qwen]}}
"""


def load(extra: str) -> dict[str, object]:
    table = load_policy_text(POLICY.format(extra=extra), {}, fx=FX)
    provider = table.providers["modelstudio"]
    return {"protocols": provider.protocols, "urls": dict(provider.native_urls), "text": describe_policy(table)}


def problems(extra: str) -> str:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(POLICY.format(extra=extra), {}, fx=FX)
    return caught.value.message


def test_chat_only_by_default() -> None:
    loaded = load("")
    assert loaded["protocols"] == {Protocol.CHAT} and loaded["urls"] == {}


def test_base_urls_are_what_each_sdk_is_given() -> None:
    loaded = load(
        "    protocols: [chat, responses, messages]\n"
        "    base_urls: {messages: 'https://dashscope-intl.aliyuncs.com/apps/anthropic/'}\n"
    )
    assert loaded["urls"] == {
        Protocol.MESSAGES: "https://dashscope-intl.aliyuncs.com/apps/anthropic/v1/messages",
        Protocol.RESPONSES: "https://dashscope-intl.aliyuncs.com/compatible-mode/v1/responses",
    }
    assert "speaks messages natively at https://dashscope-intl.aliyuncs.com/apps/anthropic/v1/messages" in str(
        loaded["text"]
    )


def test_same_root_as_chat_when_no_base_url_is_given() -> None:
    # vLLM and Ollama serve /v1/messages and /v1/responses next to /v1/chat/completions.
    loaded = load("    protocols: [chat, messages]\n")
    assert loaded["urls"] == {Protocol.MESSAGES: "https://dashscope-intl.aliyuncs.com/compatible-mode/v1/messages"}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("    protocols: [responses]\n", "providers.modelstudio.protocols: must include chat"),
        ("    protocols: [chat, grpc]\n", "providers.modelstudio.protocols[1]: input should be"),
        ("    protocols: [chat, messages, messages]\n", "providers.modelstudio.protocols[2]: messages is listed twice"),
        (
            "    base_urls: {responses: 'https://example.invalid/v1'}\n",
            "providers.modelstudio.base_urls.responses: responses is not listed in protocols",
        ),
        ("    protocols: [chat, messages]\n    base_urls: {messages: 'ftp://x'}\n",
         "providers.modelstudio.base_urls.messages: must be an http:// or https:// URL"),
        ("    base_urls: {chat: 'https://example.invalid/v1'}\n", "providers.modelstudio.base_urls.chat"),
    ],
)
def test_mistakes_name_their_yaml_path(extra: str, expected: str) -> None:
    assert expected in problems(extra)


def test_litellm_providers_speak_only_chat() -> None:
    extra = (
        "  claude:\n    type: litellm\n    litellm_prefix: anthropic\n    hosting: cloud\n    jurisdiction: us\n"
        "    vendor: anthropic\n    protocols: [chat, messages]\n"
    )
    assert "providers.claude.protocols[1]: a litellm provider speaks only chat" in problems(extra)
