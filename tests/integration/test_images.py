"""Image generation through the gateway with the official openai client: Model Studio's native image API
(simulated: async tasks and the sync call), an OpenAI-compatible self-hosted server (simulated vLLM);
failures, timeouts, fallback and the 400s a client gets for what no target can do."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.support.images import PNG_MAGIC, Stack, error_of, image_stack
from tests.support.openai_schema import schema_errors


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with image_stack(tmp_path_factory.mktemp("images")) as started:
        yield started


@pytest.fixture(autouse=True)
def _no_faults_left(stack: Stack) -> Iterator[None]:
    yield
    stack.cloud.clear()
    stack.local.clear()


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
    assert schema_errors("ImagesResponse", raw.http_response.json()) == []
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
    raw = stack.client.images.with_raw_response.generate(model="paint-cloud", prompt="a cat",
                                                         response_format="b64_json")
    assert schema_errors("ImagesResponse", raw.http_response.json()) == []
    images = raw.parse()
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


def test_a_size_one_target_does_not_serve_skips_it(stack: Stack) -> None:
    raw = stack.client.images.with_raw_response.generate(model="paint", prompt="x", size="256x256")
    assert raw.headers["x-polyroute-deployment"] == "local-image" and raw.headers["x-polyroute-attempts"] == "1"
    plan = stack.admin("/admin/routes/explain?endpoint=image", {"model": "paint", "prompt": "x", "size": "256x256"})
    assert plan["excluded"] == [{"deployment": "wan-async", "reason": "option 'size' (unsupported: size '256x256' "
                                 "is not served by wan2.2-t2i-flash: width and height must each be 512 to 2048 "
                                 "pixels)"}]


def test_chat_to_an_image_alias_and_images_to_a_chat_alias_are_400s(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client.chat.completions.create(model="paint", messages=[{"role": "user", "content": "hi"}])
    assert error_of(caught.value)["param"] == "model"
    assert "'paint' is an alias of kind image" in error_of(caught.value)["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client.images.generate(model="chat", prompt="x")
    assert "'chat' is an alias of kind chat" in error_of(caught.value)["message"]
