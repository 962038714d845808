"""No client-supplied body field or header can send a request, or the provider's key, anywhere but the policy's URL.

An attacker's server (a simulated upstream of its own, counting what reaches it) listens on loopback; every field
litellm would take as a URL, credential, header or transport setting is sent through a litellm provider with its own
base_url, one without (litellm's default URL), the `type: openai` fast path and the native Messages and Responses
relays. The attacker must never see a request, and the real upstream must see only the provider's own key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.processes import GatewayProcess, Upstream, start_gateway, start_simulated

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
UPSTREAM_KEY = "sk-provider-secret-4711"
CLIENT_KEY = "sk-chosen-by-the-client"

POLICY = """
version: 1
providers:
  keyed-litellm:
    type: litellm
    litellm_prefix: hosted_vllm
    base_url: {vllm}
    api_key: ${{UPSTREAM_KEY}}
    hosting: self_hosted
    jurisdiction: onprem
    vendor: self
  bare-litellm:          # no base_url: litellm's default for `openai/` (OPENAI_BASE_URL, the simulated vLLM here)
    type: litellm
    litellm_prefix: openai
    api_key: ${{UPSTREAM_KEY}}
    hosting: self_hosted
    jurisdiction: onprem
    vendor: self
  fast:
    type: openai
    base_url: {vllm}
    api_key: ${{UPSTREAM_KEY}}
    hosting: self_hosted
    jurisdiction: onprem
    vendor: self
  native:
    type: openai
    base_url: {cloud}
    api_key: ${{UPSTREAM_KEY}}
    hosting: cloud
    jurisdiction: sg
    vendor: alibaba
    protocols: [chat, responses, messages]
    base_urls: {{messages: {cloud_root}/apps/anthropic}}
    headers: {{anthropic-version: "2023-06-01"}}   # pinned by the operator: a client's value does not replace it
deployments:
  on-keyed-litellm: {{provider: keyed-litellm, model: Qwen/Qwen3-32B}}
  on-bare-litellm:  {{provider: bare-litellm, model: Qwen/Qwen3-32B}}
  on-fast:          {{provider: fast, model: Qwen/Qwen3-32B}}
  on-native:        {{provider: native, model: qwen3.6-plus}}
  embed-litellm:    {{provider: keyed-litellm, model: bge-m3}}
aliases:
  keyed-litellm: {{targets: [on-keyed-litellm]}}
  bare-litellm:  {{targets: [on-bare-litellm]}}
  fast:          {{targets: [on-fast]}}
  native:        {{targets: [on-native]}}
  embed-litellm: {{targets: [embed-litellm]}}
fallback:
  retries: {{attempts: 0}}
"""
LITELLM_ALIASES = ("keyed-litellm", "bare-litellm")


@dataclass
class Redirect:
    gateway: GatewayProcess
    vllm: Upstream  # the policy's upstream for the litellm providers and the fast path
    cloud: Upstream  # the policy's upstream for the native relays
    attacker: Upstream  # where a client would like the request (and the key) to go
    client: openai.OpenAI
    claude: anthropic.Anthropic

    def assert_attacker_saw_nothing(self) -> None:
        stats = self.attacker.stats()
        leaked = UPSTREAM_KEY in str(stats["last_headers"])
        assert stats["total_requests"] == 0, f"the attacker got a request (with the provider's key: {leaked})"

    def assert_upstream_saw_only_the_provider_key(self, upstream: Upstream) -> dict[str, str]:
        headers = {name.lower(): value for name, value in upstream.stats()["last_headers"].items()}
        assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert CLIENT_KEY not in str(headers)
        return headers


@pytest.fixture(scope="module")
def rd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redirect]:
    vllm = start_simulated("vllm", name="sim-vllm", api_key=UPSTREAM_KEY)
    cloud = start_simulated("modelstudio", name="sim-cloud", api_key=UPSTREAM_KEY)
    attacker = start_simulated("vllm", name="sim-attacker")
    policy: Path = tmp_path_factory.mktemp("redirect") / "policy.yaml"
    policy.write_text(POLICY.format(vllm=vllm.base_url, cloud=cloud.base_url, cloud_root=cloud.root_url))
    env = {"UPSTREAM_KEY": UPSTREAM_KEY, "OPENAI_BASE_URL": vllm.base_url, "OPENAI_API_BASE": vllm.base_url}
    gateway = start_gateway(policy, env=env)
    client = openai.OpenAI(base_url=gateway.url("/v1"), api_key=CLIENT_KEY, max_retries=0, timeout=30)
    claude = anthropic.Anthropic(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=30)
    try:
        yield Redirect(gateway, vllm, cloud, attacker, client, claude)
    finally:
        client.close()
        claude.close()
        for process in (gateway, vllm, cloud, attacker):
            process.stop()


@pytest.fixture(autouse=True)
def _fresh_counts(rd: Redirect) -> None:
    """Each test counts only its own requests."""
    for upstream in (rd.attacker, rd.vllm, rd.cloud):
        upstream.reset_stats()


def dangerous_fields(attacker: str) -> dict[str, Any]:
    """litellm arguments (litellm 1.106.2, main.py and utils.py) that choose a URL, a key, headers or transport."""
    elsewhere = {"model": "openai/Qwen/Qwen3-32B", "api_base": attacker, "api_key": CLIENT_KEY}
    return {
        "base_url": attacker,
        "api_base": attacker,
        "api_key": CLIENT_KEY,
        "api_version": "2099-01-01",
        "organization": "org-chosen-by-the-client",
        "extra_headers": {"x-client-header": "1", "authorization": f"Bearer {CLIENT_KEY}"},
        "headers": {"x-client-header": "1", "authorization": f"Bearer {CLIENT_KEY}"},
        "default_headers": {"x-client-header": "1"},
        "provider_specific_header": {"custom_llm_provider": "hosted_vllm", "extra_headers": {"x-client-header": "1"}},
        "extra_body": {"api_base": attacker},
        "custom_llm_provider": "openai",
        "mock_response": "an answer chosen by the client",
        "model_list": [{"model_name": "openai/Qwen/Qwen3-32B", "litellm_params": elsewhere}],
        "fallbacks": [elsewhere],
        "timeout": 0.001,
        "num_retries": 3,
        "max_retries": 3,
        "callbacks": ["not-a-callback"],
        "success_callback": ["not-a-callback"],
        "ssl_verify": False,
        "aws_bedrock_runtime_endpoint": attacker,
        "aws_access_key_id": "AKIA-chosen-by-the-client",
        "region_name": "us-east-1",
        "vertex_project": "chosen-by-the-client",
        "azure_ad_token": CLIENT_KEY,
        "deployment_id": "chosen-by-the-client",
        "allowed_openai_params": ["api_base"],
        "litellm_metadata": {"model_group": "x"},
        "use_litellm_proxy": True,
    }


FIELDS = sorted(dangerous_fields("http://attacker"))


@pytest.mark.parametrize("field", FIELDS)
def test_a_litellm_argument_in_the_body_is_a_400_naming_it_and_goes_nowhere(rd: Redirect, field: str) -> None:
    value = dangerous_fields(rd.attacker.base_url)[field]
    for alias in LITELLM_ALIASES:
        rd.vllm.reset_stats()
        with pytest.raises(openai.BadRequestError) as info:
            rd.client.chat.completions.create(model=alias, messages=HELLO, extra_body={field: value})
        error: Any = info.value.body
        assert (error["param"], error["code"]) == (field, "unsupported_parameter"), alias
        assert f"'{field}'" in error["message"]
        assert UPSTREAM_KEY not in str(error)
        rd.assert_attacker_saw_nothing()
        assert rd.vllm.stats()["total_requests"] == 0  # refused before litellm was called


@pytest.mark.parametrize("field", ["base_url", "api_base", "api_key", "extra_headers", "mock_response"])
def test_the_same_holds_for_streams_completions_and_embeddings(rd: Redirect, field: str) -> None:
    value = dangerous_fields(rd.attacker.base_url)[field]
    calls = [
        lambda: rd.client.chat.completions.create(
            model="keyed-litellm", messages=HELLO, stream=True, extra_body={field: value}
        ),
        lambda: rd.client.completions.create(model="keyed-litellm", prompt="hi", extra_body={field: value}),
        lambda: rd.client.embeddings.create(model="embed-litellm", input="hi", extra_body={field: value}),
    ]
    for call in calls:
        with pytest.raises(openai.BadRequestError) as info:
            call()
        assert info.value.body["param"] == field  # type: ignore[index]
    rd.assert_attacker_saw_nothing()


@pytest.mark.parametrize("field", FIELDS)
def test_the_fast_path_sends_every_body_field_only_to_the_policys_url_with_the_providers_key(
    rd: Redirect, field: str
) -> None:
    value = dangerous_fields(rd.attacker.base_url)[field]
    reply = rd.client.chat.completions.create(model="fast", messages=HELLO, extra_body={field: value})
    assert reply.choices[0].message.content
    rd.assert_attacker_saw_nothing()
    headers = rd.assert_upstream_saw_only_the_provider_key(rd.vllm)
    assert "x-client-header" not in headers
    assert rd.vllm.stats()["last_body"][field] == value  # relayed as the client sent it, to the policy's URL


def test_an_mcp_tool_is_refused_on_a_litellm_provider(rd: Redirect) -> None:
    """litellm treats `mcp` tools as servers of its own proxy and acts on them; Chat Completions has no such tool."""
    tool = {"type": "mcp", "server_label": "x", "server_url": f"{rd.attacker.root_url}/mcp/x"}
    for alias in LITELLM_ALIASES:
        with pytest.raises(openai.BadRequestError) as info:
            rd.client.chat.completions.create(model=alias, messages=HELLO, extra_body={"tools": [tool]})
        assert info.value.body["param"] == "tools[0].type"  # type: ignore[index]
    rd.assert_attacker_saw_nothing()


def test_output_shaping_extras_still_reach_a_litellm_provider(rd: Redirect) -> None:
    extras = {"top_k": 5, "repetition_penalty": 1.1, "chat_template_kwargs": {"enable_thinking": False}}
    reply = rd.client.chat.completions.create(
        model="keyed-litellm", messages=HELLO, temperature=0.2, extra_body={**extras, "metadata": {"tags": "a"}}
    )
    assert reply.choices[0].message.content
    body = rd.vllm.stats()["last_body"]
    assert {key: body[key] for key in extras} == extras
    assert body["temperature"] == 0.2
    rd.assert_upstream_saw_only_the_provider_key(rd.vllm)


# Headers a client might hope the gateway passes on, rewrites a URL from, or authenticates with.
CLIENT_HEADERS = {
    "x-api-key": CLIENT_KEY,
    "api-key": CLIENT_KEY,
    "proxy-authorization": f"Bearer {CLIENT_KEY}",
    "x-forwarded-host": "attacker.invalid",
    "x-forwarded-proto": "http",
    "forwarded": "host=attacker.invalid",
    "x-original-url": "http://attacker.invalid/v1",
    "x-polyroute-base-url": "http://attacker.invalid/v1",
    "openai-organization": "org-chosen-by-the-client",
    "x-client-header": "1",
}


def _leaked(headers: dict[str, str]) -> set[str]:
    return {name for name in CLIENT_HEADERS if headers.get(name) == CLIENT_HEADERS[name]}


@pytest.mark.parametrize("alias", ["keyed-litellm", "bare-litellm", "fast"])
def test_client_headers_never_reach_the_upstream_nor_replace_its_key(rd: Redirect, alias: str) -> None:
    host = {"host": f"127.0.0.1:{rd.attacker.port}"}
    client = rd.client.with_options(default_headers={**CLIENT_HEADERS, **host})
    reply = client.chat.completions.create(model=alias, messages=HELLO)
    assert reply.choices[0].message.content
    headers = rd.assert_upstream_saw_only_the_provider_key(rd.vllm)
    assert not _leaked(headers)
    assert headers["host"] != host["host"]
    rd.assert_attacker_saw_nothing()


def test_native_messages_relay_passes_on_only_the_anthropic_headers(rd: Redirect) -> None:
    anthropic_headers = {"anthropic-beta": "tools-2099", "anthropic-version": "2099-01-01"}
    claude = rd.claude.with_options(default_headers={**CLIENT_HEADERS, **anthropic_headers})
    fields = dangerous_fields(rd.attacker.base_url)
    reply = claude.messages.create(
        model="native", max_tokens=64, messages=[{"role": "user", "content": "hi"}],
        extra_body={"base_url": fields["base_url"], "api_key": CLIENT_KEY, "extra_headers": fields["extra_headers"]},
    )
    assert reply.content
    headers = rd.assert_upstream_saw_only_the_provider_key(rd.cloud)
    assert headers["x-api-key"] == UPSTREAM_KEY
    assert headers["anthropic-beta"] == "tools-2099"  # the documented pass-through
    assert headers["anthropic-version"] == "2023-06-01"  # ... unless the provider's `headers` set it
    assert not _leaked(headers) - {"x-api-key"}
    assert rd.cloud.stats()["last_path"] == "/apps/anthropic/v1/messages"
    rd.assert_attacker_saw_nothing()


def test_native_responses_relay_sends_the_body_only_to_the_policys_url(rd: Redirect) -> None:
    client = rd.client.with_options(default_headers=CLIENT_HEADERS)
    fields = dangerous_fields(rd.attacker.base_url)
    reply = client.responses.create(
        model="native", input="hi", store=False,
        extra_body={"base_url": fields["base_url"], "api_base": fields["api_base"], "api_key": CLIENT_KEY},
    )
    assert reply.output_text
    headers = rd.assert_upstream_saw_only_the_provider_key(rd.cloud)
    assert not _leaked(headers)
    assert rd.cloud.stats()["last_path"] == "/compatible-mode/v1/responses"
    rd.assert_attacker_saw_nothing()


@pytest.mark.parametrize("field", ["base_url", "api_base", "api_key", "extra_headers", "mock_response"])
def test_messages_and_responses_translated_for_a_litellm_provider_refuse_the_field(rd: Redirect, field: str) -> None:
    value = dangerous_fields(rd.attacker.base_url)[field]
    with pytest.raises(anthropic.BadRequestError) as refused:
        rd.claude.messages.create(
            model="keyed-litellm", max_tokens=64, messages=[{"role": "user", "content": "hi"}],
            extra_body={field: value},
        )
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert f"'{field}'" in refused.value.body["error"]["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as info:
        rd.client.responses.create(model="keyed-litellm", input="hi", store=False, extra_body={field: value})
    assert info.value.body["param"] == field  # type: ignore[index]
    rd.assert_attacker_saw_nothing()
