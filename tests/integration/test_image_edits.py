"""Image edits (multipart) through the gateway with the official openai client, and what a user checks of image
requests: cost per image, /admin/usage, metrics, budgets, route explain and policy check."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.images import POLICY, Stack, error_of, image_stack, sim_png
from tests.support.openai_schema import schema_errors
from tests.support.processes import start_gateway


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with image_stack(tmp_path_factory.mktemp("images")) as started:
        yield started


@pytest.fixture(autouse=True)
def _no_faults_left(stack: Stack) -> Iterator[None]:
    yield
    stack.cloud.clear()
    stack.local.clear()


# --- edits -------------------------------------------------------------------------------------------------------

def test_edit_through_model_studio_sends_the_image_as_a_data_url(stack: Stack) -> None:
    png = sim_png(stack)
    raw = stack.client.images.with_raw_response.edit(model="edit", image=("in.png", png, "image/png"),
                                                     prompt="make it blue", size="1024x1024")
    assert raw.headers["x-polyroute-deployment"] == "qwen-edit"
    assert raw.parse().data is not None
    assert schema_errors("ImagesResponse", raw.http_response.json()) == []
    content = stack.cloud.stats()["last_body"]["input"]["messages"][0]["content"]
    assert content[0]["image"] == "data:image/png;base64," + base64.b64encode(png).decode()
    assert content[1] == {"text": "make it blue"}


def test_edit_is_relayed_as_multipart_to_a_self_hosted_server(stack: Stack) -> None:
    png = sim_png(stack)
    images = stack.client.images.edit(model="edit-local", image=("in.png", png, "image/png"), prompt="add a hat",
                                      n=2, response_format="b64_json")
    assert images.data is not None and len(images.data) == 2
    sent = stack.local.stats()["last_body"]
    assert sent["prompt"] == "add a hat" and sent["model"] == "sd-turbo" and sent["files"] == ["image"]


def test_an_edit_option_model_studio_lacks_is_a_400(stack: Stack) -> None:
    png = sim_png(stack)
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client.images.edit(model="edit", image=("in.png", png, "image/png"), mask=("m.png", png, "image/png"),
                                 prompt="x")
    assert error_of(caught.value)["param"] == "mask"


def test_a_body_that_is_not_multipart_is_a_400(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client.post("/images/edits", body={"model": "edit", "prompt": "x"}, cast_to=object)
    assert "multipart/form-data" in error_of(caught.value)["message"]




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
    assert preset["images"] == 2  # one image each
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
    assert "excluded: wan-async (option 'style' (unsupported: does not support 'style'))" in result.stdout
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
