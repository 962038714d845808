"""GET /v1/models/{model} through the official client: an alias the caller may use, or the same 404 for any other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.processes import GatewayProcess, start_gateway, start_simulated

KEYS = {"team-a": "sk-retrieve-team-a", "team-b": "sk-retrieve-team-b"}
POLICY = """
version: 1
providers:
  pool: {{type: openai, base_url: "{base_url}", hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  main: {{provider: pool, model: main-model}}
aliases:
  chat:        {{targets: [main]}}
  secret-chat: {{targets: [main]}}
  qwen/coder:  {{targets: [main]}}
tenants:
  team-a: {{api_keys: ["{team_a}"], models: [chat, qwen/coder]}}
  team-b: {{api_keys: ["{team_b}"]}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    upstream = start_simulated("vllm", name="sim-retrieve")
    policy: Path = tmp_path_factory.mktemp("retrieve") / "policy.yaml"
    policy.write_text(POLICY.format(base_url=upstream.base_url, team_a=KEYS["team-a"], team_b=KEYS["team-b"]))
    process = start_gateway(policy)
    try:
        yield process
    finally:
        process.stop()
        upstream.stop()


@pytest.fixture(scope="module")
def clients(gateway: GatewayProcess) -> Iterator[dict[str, openai.OpenAI]]:
    made = {
        team: openai.OpenAI(base_url=gateway.url("/v1"), api_key=key, max_retries=0, timeout=30)
        for team, key in {**KEYS, "nobody": "sk-not-a-key"}.items()
    }
    try:
        yield made
    finally:
        for client in made.values():
            client.close()


def test_an_alias_the_caller_may_use_is_an_openai_model_object(clients: dict[str, openai.OpenAI]) -> None:
    model = clients["team-a"].models.retrieve("chat")
    assert (model.id, model.object, model.owned_by) == ("chat", "model", "polyroute")
    assert isinstance(model.created, int) and model.created > 0
    assert clients["team-a"].models.retrieve("qwen/coder").id == "qwen/coder"  # an alias with a slash


def test_retrieve_agrees_with_the_list_for_every_tenant(clients: dict[str, openai.OpenAI]) -> None:
    for team in KEYS:
        client = clients[team]
        listed = {model.id: model for model in client.models.list().data}
        assert listed
        for name, model in listed.items():
            retrieved = client.models.retrieve(name)
            assert (retrieved.id, retrieved.object, retrieved.owned_by) == (model.id, model.object, model.owned_by)


def test_an_alias_not_allowed_gets_the_same_404_as_one_that_does_not_exist(clients: dict[str, openai.OpenAI]) -> None:
    bodies = {}
    for name in ("secret-chat", "no-such-alias"):
        with pytest.raises(openai.NotFoundError) as info:
            clients["team-a"].models.retrieve(name)
        body = info.value.body
        assert isinstance(body, dict)
        assert (body["code"], body["param"]) == ("model_not_found", "model")
        assert f"'{name}'" in body["message"]
        bodies[name] = {**body, "message": body["message"].replace(name, "NAME")}
    # Nothing tells team A that `secret-chat` exists (team B, allowed every alias, does see it).
    assert bodies["secret-chat"] == bodies["no-such-alias"]
    assert clients["team-b"].models.retrieve("secret-chat").id == "secret-chat"


def test_a_caller_without_a_valid_key_gets_401_not_a_model(clients: dict[str, openai.OpenAI]) -> None:
    for name in ("chat", "no-such-alias"):
        with pytest.raises(openai.AuthenticationError):
            clients["nobody"].models.retrieve(name)
