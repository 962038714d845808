"""Image generation through a litellm provider (litellm's OpenAI route to the simulated vLLM image server): the
images and their cost, the parameter allow-list, and edits, which litellm does not relay."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest

from tests.support.images import error_of
from tests.support.processes import GatewayProcess, Upstream, start_gateway, start_simulated

POLICY = """
version: 1
providers:
  via-litellm: {{type: litellm, litellm_prefix: openai, base_url: "{local}", api_key: unused,
                hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  litellm-image: {{provider: via-litellm, model: sd-turbo, kind: image, price: {{per_image: 0.002}}}}
aliases:
  paint-litellm: {{targets: [litellm-image]}}
fallback:
  retries: {{attempts: 0}}
  timeouts: {{connect: 1s, first_token: 10s, total: 10s}}
"""
STARTUP_S = 60.0  # litellm is imported when the policy is loaded: slow on a busy machine


@dataclass
class LiteLLMStack:
    gateway: GatewayProcess
    local: Upstream
    client: openai.OpenAI


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiteLLMStack]:
    local = start_simulated("vllm", name="sim-local")
    path = tmp_path_factory.mktemp("images-litellm") / "policy.yaml"
    path.write_text(POLICY.format(local=local.base_url))
    try:
        gateway = start_gateway(path, timeout=STARTUP_S)
    except BaseException:
        local.stop()
        raise
    client = openai.OpenAI(base_url=gateway.url("/v1"), api_key="any", max_retries=0)
    try:
        yield LiteLLMStack(gateway, local, client)
    finally:
        client.close()
        gateway.stop()
        local.stop()


def test_litellm_generates_images_for_other_clouds(lite: LiteLLMStack) -> None:
    raw = lite.client.images.with_raw_response.generate(model="paint-litellm", prompt="a kite", n=2)
    images = raw.parse()
    assert images.data is not None and len(images.data) == 2
    assert all(image.url and "/_sim/images/" in image.url for image in images.data)
    assert float(raw.headers["x-polyroute-cost-usd"]) == pytest.approx(2 * 0.002)
    assert lite.local.stats()["last_path"] == "/v1/images/generations"


def test_litellm_takes_only_the_images_api_parameters(lite: LiteLLMStack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        lite.client.images.generate(model="paint-litellm", prompt="x", extra_body={"api_base": "http://evil"})
    assert error_of(caught.value)["param"] == "api_base"


def test_an_edit_to_a_litellm_target_is_a_400(lite: LiteLLMStack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        lite.client.images.edit(model="paint-litellm", image=("in.png", b"\x89PNG", "image/png"), prompt="x")
    assert error_of(caught.value)["param"] == "image" and "litellm-image" in error_of(caught.value)["message"]
