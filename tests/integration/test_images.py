"""Image generation and edits through the gateway, with the official openai client: Model Studio's native image
API (simulated: async tasks and the sync call) and an OpenAI-compatible self-hosted server (simulated vLLM)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.processes import GatewayProcess, Upstream, start_gateway, start_simulated

CLOUD_KEY = "sk-sim-images-secret"
ADMIN_KEY = "adm-images"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

POLICY = """
version: 1
providers:
  ms-images: {{type: dashscope, base_url: "{cloud}/api/v1", api_key: "${{SIM_CLOUD_KEY}}",
              hosting: cloud, jurisdiction: sg, vendor: alibaba}}
  local:     {{type: openai, base_url: "{local}", hosting: self_hosted, jurisdiction: onprem, vendor: self}}
  via-litellm: {{type: litellm, litellm_prefix: openai, base_url: "{local}", api_key: unused,
                hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  wan-async:   {{provider: ms-images, model: wan2.2-t2i-flash, kind: image, price: {{per_image: 0.02}}}}
  qwen-preset: {{provider: ms-images, model: qwen-image-plus, kind: image,
                price: {{per_image: {{"1328x1328": 0.03, default: 0.05}}}}}}
  qwen-sync:   {{provider: ms-images, model: qwen-image-2.0, kind: image, price: {{per_image: 0.04}}}}
  qwen-edit:   {{provider: ms-images, model: qwen-image-edit-plus, kind: image, price: {{per_image: 0.03}}}}
  local-image: {{provider: local, model: sd-turbo, kind: image, price: {{per_image: 0.001}}}}
  local-chat:  {{provider: local, model: Qwen/Qwen3-32B}}
  litellm-image: {{provider: via-litellm, model: sd-turbo, kind: image, price: {{per_image: 0.002}}}}
aliases:
  paint:        {{targets: [wan-async, local-image]}}
  paint-cloud:  {{targets: [wan-async]}}
  paint-preset: {{targets: [qwen-preset]}}
  paint-sync:   {{targets: [qwen-sync]}}
  paint-local:  {{targets: [local-image]}}
  edit:         {{targets: [qwen-edit]}}
  edit-local:   {{targets: [local-image]}}
  chat:         {{targets: [local-chat]}}
  paint-litellm: {{targets: [litellm-image]}}
fallback:
  on: [rate_limit, timeout, server_error, connection_error, content_policy]
  retries: {{attempts: 0}}
  timeouts: {{connect: 1s, first_token: 3s, total: 3s}}
"""


@dataclass
class Stack:
    gateway: GatewayProcess
    cloud: Upstream
    local: Upstream
    client: openai.OpenAI

    def admin(self, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.gateway.url(path), data=data, method="POST" if data else "GET",
                                         headers={"authorization": f"Bearer {ADMIN_KEY}",
                                                  "content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(self.gateway.url("/metrics"), timeout=5) as response:
            text: str = response.read().decode()
            return text


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cloud = start_simulated("modelstudio", name="sim-cloud", api_key=CLOUD_KEY)
    local = start_simulated("vllm", name="sim-local")
    path = tmp_path_factory.mktemp("images") / "policy.yaml"
    path.write_text(POLICY.format(cloud=cloud.root_url, local=local.base_url))
    try:
        gateway = start_gateway(path, env={"SIM_CLOUD_KEY": CLOUD_KEY, "POLYROUTE_ADMIN_KEY": ADMIN_KEY})
    except BaseException:
        cloud.stop()
        local.stop()
        raise
    client = openai.OpenAI(base_url=gateway.url("/v1"), api_key="any", max_retries=0)
    try:
        yield Stack(gateway, cloud, local, client)
    finally:
        client.close()
        gateway.stop()
        cloud.stop()
        local.stop()


@pytest.fixture(autouse=True)
def _no_faults_left(stack: Stack) -> Iterator[None]:
    yield
    stack.cloud.clear()
    stack.local.clear()


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body: dict[str, Any] = exc.response.json()["error"]
    return body


# --- generations -------------------------------------------------------------------------------------------------

def test_async_task_answers_two_urls_at_the_mapped_size(stack: Stack) -> None:
    stack.cloud.reset_stats()
    raw = stack.client.images.with_raw_response.generate(model="paint-cloud", prompt="a red fox", n=2,
                                                         size="1024x1024")
    images = raw.parse()
    assert raw.headers["x-polyroute-deployment"] == "wan-async"
    assert images.data is not None and len(images.data) == 2
    assert all(image.url and "/_sim/images/" in image.url for image in images.data)
    assert images.size == "1024x1024"
    stats = stack.cloud.stats()["requests_by_path"]
    assert stats["/api/v1/services/aigc/text2image/image-synthesis"] == 1
    # PENDING, RUNNING, SUCCEEDED: one query each
    assert sum(count for path, count in stats.items() if path.startswith("/api/v1/tasks/")) == 3
    assert float(raw.headers["x-polyroute-cost-usd"]) == pytest.approx(2 * 0.02)


def test_sync_call_sends_the_size_in_dashscope_words(stack: Stack) -> None:
    images = stack.client.images.generate(model="paint-sync", prompt="a lighthouse", size="1024x1536",
                                          extra_body={"negative_prompt": "blurry", "watermark": False})
    assert images.data is not None and len(images.data) == 1
    sent = stack.cloud.stats()["last_body"]
    assert sent["parameters"] == {"size": "1024*1536", "negative_prompt": "blurry", "watermark": False}
    assert sent["input"]["messages"][0]["content"] == [{"text": "a lighthouse"}]


def test_b64_json_from_a_url_only_provider_is_the_image_itself(stack: Stack) -> None:
    images = stack.client.images.generate(model="paint-cloud", prompt="a cat", response_format="b64_json")
    assert images.data is not None and images.data[0].url is None
    assert base64.b64decode(images.data[0].b64_json or "").startswith(PNG_MAGIC)
    # The image was fetched without the provider's key: the simulator saw no authorization on it.
    assert stack.cloud.last_header("authorization") is None


def test_self_hosted_server_is_relayed(stack: Stack) -> None:
    images = stack.client.images.generate(model="paint-local", prompt="a boat", response_format="b64_json", n=2)
    assert images.data is not None and len(images.data) == 2
    assert base64.b64decode(images.data[1].b64_json or "").startswith(PNG_MAGIC)
    assert stack.local.stats()["last_body"]["model"] == "sd-turbo"


def test_failed_task_fails_over_to_the_self_hosted_server(stack: Stack) -> None:
    stack.cloud.inject([{"fault": "task_failed", "model": "wan2.2-t2i-flash"}])
    raw = stack.client.images.with_raw_response.generate(model="paint", prompt="a tree")
    assert raw.headers["x-polyroute-deployment"] == "local-image"
    assert raw.headers["x-polyroute-fallback-reason"] == "server_error"
    assert raw.parse().data is not None
    assert stack.cloud.stats()["faults_served"]["task_failed"] == 1


def test_failed_task_without_a_fallback_is_a_502_naming_the_task(stack: Stack) -> None:
    stack.cloud.inject([{"fault": "task_failed", "code": "InternalError.Algo", "message": "model overloaded"}])
    with pytest.raises(openai.InternalServerError) as caught:
        stack.client.images.generate(model="paint-cloud", prompt="a tree")
    assert caught.value.status_code == 502
    assert "image task FAILED: InternalError.Algo: model overloaded" in error_of(caught.value)["message"]


def test_content_inspection_is_a_content_policy_400(stack: Stack) -> None:
    stack.cloud.inject([{"fault": "data_inspection"}])
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client.images.generate(model="paint-cloud", prompt="something")
    assert error_of(caught.value)["code"] == "content_policy_violation"


def test_throttling_is_a_rate_limit(stack: Stack) -> None:
    stack.cloud.inject([{"fault": "throttling", "retry_after": "2"}])
    with pytest.raises(openai.RateLimitError) as caught:
        stack.client.images.generate(model="paint-cloud", prompt="something")
    assert "Throttling.RateQuota" in error_of(caught.value)["message"]


def test_a_task_running_past_the_total_timeout_is_a_504(stack: Stack) -> None:
    stack.cloud.inject([{"fault": "task_stuck"}])
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        stack.client.images.generate(model="paint-cloud", prompt="slow")
    assert caught.value.status_code == 504
    assert "total timeout of 3s" in error_of(caught.value)["message"]
    assert time.monotonic() - started < 30  # bounded: the test itself must end


def test_a_stuck_task_fails_over_within_the_request(stack: Stack) -> None:
    stack.cloud.inject([{"fault": "task_stuck"}])
    raw = stack.client.images.with_raw_response.generate(model="paint", prompt="slow")
    assert raw.headers["x-polyroute-deployment"] == "local-image"
    assert raw.headers["x-polyroute-fallback-reason"] == "timeout"


def test_litellm_generates_images_for_other_clouds(stack: Stack) -> None:
    raw = stack.client.images.with_raw_response.generate(model="paint-litellm", prompt="a kite", n=2)
    images = raw.parse()
    assert images.data is not None and len(images.data) == 2
    assert all(image.url and "/_sim/images/" in image.url for image in images.data)
    assert float(raw.headers["x-polyroute-cost-usd"]) == pytest.approx(2 * 0.002)
    assert stack.local.stats()["last_path"] == "/v1/images/generations"


def test_litellm_takes_only_the_images_api_parameters(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client.images.generate(model="paint-litellm", prompt="x", extra_body={"api_base": "http://evil"})
    assert error_of(caught.value)["param"] == "api_base"


# --- bad requests ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 0}, "n"),
    ({"n": 11}, "n"),
    ({"response_format": "png"}, "response_format"),
    ({"quality": "ultra"}, "quality"),
    ({"size": "big"}, "size"),
    ({"stream": True}, "stream"),
])
def test_bad_fields_are_400s_naming_them(stack: Stack, extra: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client.images.generate(model="paint", prompt="x", extra_body=extra)
    assert error_of(caught.value)["param"] == param


def test_missing_prompt_is_a_400(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client.post("/images/generations", body={"model": "paint"}, cast_to=object)
    assert error_of(caught.value)["param"] == "prompt"


def test_a_size_the_model_does_not_serve_is_a_400_naming_it(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client.images.generate(model="paint-preset", prompt="x", size="1024x1024")
    error = error_of(caught.value)
    assert error["param"] == "size" and "1024x1024" in error["message"] and "1328x1328" in error["message"]


def test_an_option_no_target_supports_is_a_400_naming_it(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client.images.generate(model="paint-cloud", prompt="x", style="vivid")
    error = error_of(caught.value)
    assert error["param"] == "style" and "wan-async" in error["message"]


def test_an_option_one_target_lacks_skips_it(stack: Stack) -> None:
    raw = stack.client.images.with_raw_response.generate(model="paint", prompt="x", style="natural")
    assert raw.headers["x-polyroute-deployment"] == "local-image"
    assert stack.local.stats()["last_body"]["style"] == "natural"


def test_chat_to_an_image_alias_and_images_to_a_chat_alias_are_400s(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client.chat.completions.create(model="paint", messages=[{"role": "user", "content": "hi"}])
    assert error_of(caught.value)["param"] == "model"
    assert "'paint' is an alias of kind image" in error_of(caught.value)["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client.images.generate(model="chat", prompt="x")
    assert "'chat' is an alias of kind chat" in error_of(caught.value)["message"]


# --- edits -------------------------------------------------------------------------------------------------------

def test_edit_through_model_studio_sends_the_image_as_a_data_url(stack: Stack) -> None:
    png = _sim_png(stack)
    raw = stack.client.images.with_raw_response.edit(model="edit", image=("in.png", png, "image/png"),
                                                     prompt="make it blue", size="1024x1024")
    assert raw.headers["x-polyroute-deployment"] == "qwen-edit"
    assert raw.parse().data is not None
    content = stack.cloud.stats()["last_body"]["input"]["messages"][0]["content"]
    assert content[0]["image"] == "data:image/png;base64," + base64.b64encode(png).decode()
    assert content[1] == {"text": "make it blue"}


def test_edit_is_relayed_as_multipart_to_a_self_hosted_server(stack: Stack) -> None:
    png = _sim_png(stack)
    images = stack.client.images.edit(model="edit-local", image=("in.png", png, "image/png"), prompt="add a hat",
                                      n=2, response_format="b64_json")
    assert images.data is not None and len(images.data) == 2
    sent = stack.local.stats()["last_body"]
    assert sent["prompt"] == "add a hat" and sent["model"] == "sd-turbo" and sent["files"] == ["image"]


def test_an_edit_option_model_studio_lacks_is_a_400(stack: Stack) -> None:
    png = _sim_png(stack)
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client.images.edit(model="edit", image=("in.png", png, "image/png"), mask=("m.png", png, "image/png"),
                                 prompt="x")
    assert error_of(caught.value)["param"] == "mask"


def test_an_edit_to_a_litellm_target_is_a_400(stack: Stack) -> None:
    png = _sim_png(stack)
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client.images.edit(model="paint-litellm", image=("in.png", png, "image/png"), prompt="x")
    assert error_of(caught.value)["param"] == "image" and "litellm-image" in error_of(caught.value)["message"]


def test_a_body_that_is_not_multipart_is_a_400(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client.post("/images/edits", body={"model": "edit", "prompt": "x"}, cast_to=object)
    assert "multipart/form-data" in error_of(caught.value)["message"]


def _sim_png(stack: Stack) -> bytes:
    with urllib.request.urlopen(stack.cloud.root_url + "/_sim/images/probe.png", timeout=5) as response:
        data: bytes = response.read()
    return data


# --- accounting and explain --------------------------------------------------------------------------------------

def test_cost_is_images_returned_times_the_price_by_size(stack: Stack) -> None:
    raw = stack.client.images.with_raw_response.generate(model="paint-preset", prompt="x", size="1328x1328")
    assert float(raw.headers["x-polyroute-cost-usd"]) == pytest.approx(0.03)
    raw = stack.client.images.with_raw_response.generate(model="paint-preset", prompt="x", size="1664x928")
    assert float(raw.headers["x-polyroute-cost-usd"]) == pytest.approx(0.05)  # no entry for its size: default
    deadline = time.monotonic() + 10
    while True:
        groups = stack.admin("/admin/usage?days=1&group_by=deployment")["groups"]
        preset = next((g for g in groups if g["deployment"] == "qwen-preset"), None)
        if (preset is not None and preset["requests"] >= 2) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert preset is not None and preset["cost_usd"] == pytest.approx(0.08)
    assert 'polyroute_images_total{' in stack.metrics()


def test_route_explain_takes_an_image_body(stack: Stack) -> None:
    plan = stack.admin("/admin/routes/explain?endpoint=image", {"model": "paint", "prompt": "x", "n": 3})
    assert [a for a in plan["attempts"]] == ["wan-async", "local-image"]
    assert plan["estimated_cost_usd"]["wan-async"] == pytest.approx(0.06)


def test_policy_check_refuses_an_alias_that_mixes_kinds(tmp_path: Path) -> None:
    policy = tmp_path / "mixed.yaml"
    policy.write_text("""
version: 1
providers:
  local: {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: self_hosted, jurisdiction: onprem, vendor: self}
deployments:
  chatty: {provider: local, model: m}
  painter: {provider: local, model: p, kind: image}
aliases:
  mixed: {targets: [chatty, painter]}
""")
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "policy", "check", str(policy)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "aliases.mixed.targets[1]: deployment 'painter' is of kind image" in result.stdout + result.stderr


def test_route_explain_cli_shows_a_target_excluded_by_an_option(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(cloud="http://127.0.0.1:9", local="http://127.0.0.1:9/v1"))
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"model": "paint", "prompt": "x", "style": "vivid", "n": 2}))
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "route", "explain", str(policy), "--request", str(body),
         "--endpoint", "image"],
        capture_output=True, text=True, timeout=60, check=False, env={"SIM_CLOUD_KEY": "k", "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "decision: route=alias:paint attempts=local-image" in result.stdout
    assert "excluded: wan-async (option 'style' (unsupported))" in result.stdout
    assert "local-image=$0.002000" in result.stdout  # 2 images at 0.001


BUDGET_POLICY = """
version: 1
providers:
  local: {{type: openai, base_url: "{local}", hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  local-image: {{provider: local, model: sd-turbo, kind: image, price: {{per_image: 0.02}}}}
aliases:
  paint: {{targets: [local-image]}}
tenants:
  team:
    api_keys: ["sk-images-team"]
    limits: {{tpm: 1}}
    budget: {{usd_per_day: 0.05}}
"""


def test_budgets_see_image_costs_and_tpm_limits_do_not_apply(stack: Stack, tmp_path: Path) -> None:
    policy = tmp_path / "budget.yaml"
    policy.write_text(BUDGET_POLICY.format(local=stack.local.base_url))
    gateway = start_gateway(policy)
    try:
        with openai.OpenAI(base_url=gateway.url("/v1"), api_key="sk-images-team", max_retries=0) as client:
            raw = client.images.with_raw_response.generate(model="paint", prompt="x", n=2)  # a tpm of 1: no matter
            assert float(raw.headers["x-polyroute-cost-usd"]) == pytest.approx(0.04)
            deadline = time.monotonic() + 10
            while True:  # the cost is settled against the budget off the response path
                try:
                    client.images.generate(model="paint", prompt="x", n=1)  # 0.04 + 0.02 > 0.05
                except openai.RateLimitError as exc:
                    refusal = error_of(exc)
                    break
                assert time.monotonic() < deadline, "the budget never saw the images' cost"
                time.sleep(0.1)
        assert refusal["code"] == "insufficient_quota" and "budget of $0.05" in refusal["message"]
    finally:
        gateway.stop()
