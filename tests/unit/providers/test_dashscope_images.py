"""The OpenAI <-> Model Studio (DashScope) image translation, and which image URLs the provider may fetch."""

from __future__ import annotations

import pytest

from gateway.error_classes import ErrorClass
from gateway.errors import BadRequestError
from gateway.policy.table import Hosting, Provider
from gateway.providers.dashscope import DashScopeImageProvider
from gateway.providers.dashscope_images import (
    dashscope_size,
    generation_body,
    generation_urls,
    image_api,
    images_response,
    task_body,
    task_id,
    task_state,
)
from gateway.providers.failures import task_failure


class File:
    filename = "in.png"
    content_type = "image/png"
    data = b"\x89PNG..."


def test_sizes_map_both_ways() -> None:
    assert dashscope_size("wan2.2-t2i-flash", "1024x1024") == "1024*1024"
    assert dashscope_size("qwen-image-plus", "1328x1328") == "1328*1328"
    assert images_response([("url", "u")], "1024*1536")["size"] == "1024x1536"
    assert "size" not in images_response([("url", "u")], "1328*1328")  # not a size OpenAI's answer may name
    assert dashscope_size("qwen-image-2.0", "auto") is None and dashscope_size("qwen-image-2.0", None) is None


@pytest.mark.parametrize(("model", "size"), [("qwen-image-plus", "1024x1024"), ("qwen-image-max", "512x512"),
                                             ("qwen-image-2.0", "256x256"), ("wan2.2-t2i-flash", "4096x1024")])
def test_a_size_the_model_does_not_serve_is_a_400_naming_it(model: str, size: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        dashscope_size(model, size)
    assert caught.value.param == "size" and size in caught.value.message and model in caught.value.message


def test_the_api_follows_the_model_unless_the_deployment_says() -> None:
    assert image_api("qwen-image", None) == image_api("qwen-image-plus", None) == "async"
    assert image_api("wan2.2-t2i-flash", None) == image_api("wanx-v1", None) == "async"
    assert image_api("qwen-image-max", None) == image_api("qwen-image-2.0-pro", None) == "sync"
    assert image_api("qwen-image-edit-plus", None) == "sync"
    assert image_api("qwen-image-plus", "sync") == "sync"


def test_a_task_body_keeps_the_prompt_in_input_and_passes_extras_on() -> None:
    body = {"model": "alias", "prompt": "a fox", "n": 2, "size": "1024x1024", "response_format": "b64_json",
            "negative_prompt": "blur", "prompt_extend": False, "seed": 7}
    assert task_body("wan2.2-t2i-flash", body) == {
        "model": "wan2.2-t2i-flash",
        "input": {"prompt": "a fox", "negative_prompt": "blur"},
        "parameters": {"prompt_extend": False, "seed": 7, "size": "1024*1024", "n": 2},
    }


def test_a_sync_body_is_one_user_message_and_an_edit_puts_the_images_first() -> None:
    body = {"prompt": "a fox", "negative_prompt": "blur"}
    assert generation_body("qwen-image-2.0", body) == {
        "model": "qwen-image-2.0",
        "input": {"messages": [{"role": "user", "content": [{"text": "a fox"}]}]},
        "parameters": {"negative_prompt": "blur"},
    }
    edit = generation_body("qwen-image-edit-plus", {"prompt": "blue"}, [File()])
    assert edit["input"]["messages"][0]["content"] == [
        {"image": "data:image/png;base64,iVBORy4uLg=="}, {"text": "blue"}
    ]


def test_task_answers_are_read() -> None:
    assert task_id({"output": {"task_id": "t-1", "task_status": "PENDING"}}) == "t-1"
    assert task_id({"code": "InvalidParameter"}) is None
    done = {"output": {"task_status": "SUCCEEDED", "results": [{"url": "a"}, {"code": "x", "message": "y"},
                                                              {"url": "b"}]}}
    assert task_state(done) == ("SUCCEEDED", ["a", "b"], "", "")
    failed = {"output": {"task_status": "FAILED", "code": "InternalError", "message": "boom"}}
    assert task_state(failed) == ("FAILED", [], "InternalError", "boom")
    assert task_state({"request_id": "r"})[0] == "UNKNOWN"


def test_sync_answers_are_read() -> None:
    data = {"output": {"choices": [{"message": {"content": [{"image": "u1"}, {"text": "t"}, {"image": "u2"}]}}]}}
    assert generation_urls(data) == ["u1", "u2"]
    assert generation_urls({"output": {}}) == []


@pytest.mark.parametrize(("code", "message", "error_class"), [
    ("DataInspectionFailed", "Input data may contain inappropriate content.", ErrorClass.CONTENT_POLICY),
    ("Throttling.RateQuota", "Requests rate limit exceeded", ErrorClass.RATE_LIMIT),
    ("InternalError.Algo", "model overloaded", ErrorClass.SERVER_ERROR),
    ("", "", ErrorClass.SERVER_ERROR),
])
def test_a_task_that_ended_without_images_is_classified(code: str, message: str, error_class: ErrorClass) -> None:
    failure = task_failure("FAILED", code, message)
    assert failure.error_class is error_class and failure.message.startswith("image task FAILED")


def provider(base_url: str) -> DashScopeImageProvider:
    config = Provider(name="ms", type="dashscope", hosting=Hosting.CLOUD, jurisdiction="sg", vendor="alibaba",
                      base_url=base_url, api_key="sk-secret")
    return DashScopeImageProvider(config)


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://dashscope-result-sgp.oss-ap-southeast-1.aliyuncs.com/x.png?Expires=1", True),
    ("https://dashscope-intl.aliyuncs.com/files/x.png", True),
    ("http://dashscope-result.oss.aliyuncs.com/x.png", False),  # not down to plain http
    ("https://aliyuncs.com.evil.example/x.png", False),
    ("https://169.254.169.254/latest/meta-data", False),
    ("https://x.aliyuncs.com:8443/x.png", False),
    ("file:///etc/passwd", False),
])
def test_only_the_providers_own_hosts_are_fetched(url: str, allowed: bool) -> None:
    assert provider("https://dashscope-intl.aliyuncs.com/api/v1").may_fetch(url) is allowed


def test_a_workspace_endpoint_fetches_from_the_storage_hosts() -> None:
    ms = provider("https://ws-123.ap-southeast-1.maas.aliyuncs.com/api/v1")
    assert ms.may_fetch("https://dashscope-result-sgp.oss-ap-southeast-1.aliyuncs.com/x.png")
    assert not provider("https://images.example.co.uk/api/v1").may_fetch("https://evil.co.uk/x.png")
    assert provider("https://images.example.co.uk/api/v1").may_fetch("https://cdn.example.co.uk/x.png")


def test_an_ip_provider_is_fetched_from_its_own_address_and_port_only() -> None:
    ms = provider("http://127.0.0.1:8080/api/v1")
    assert ms.may_fetch("http://127.0.0.1:8080/_sim/images/a.png")
    assert not ms.may_fetch("http://127.0.0.1:6379/")
    assert not ms.may_fetch("http://127.0.0.2:8080/a.png")
