"""Translation between OpenAI's Images API and Model Studio's native (DashScope) image API, without I/O.

Two DashScope APIs, per the Model Studio API references (README "Images" cites them):
- async task, `POST /services/aigc/text2image/image-synthesis` with `X-DashScope-Async: enable` ->
  `output.task_id`; `GET /tasks/{task_id}` until `output.task_status` is SUCCEEDED (`output.results[].url`) or
  FAILED / CANCELED / UNKNOWN (`output.code`, `output.message`). Only qwen-image and qwen-image-plus of the Qwen
  models, and the Wan text-to-image models before 2.6, are served this way.
- sync, `POST /services/aigc/multimodal-generation/generation`: `input.messages[0].content` is `[{"text"}]` (or
  images first, then the text, for an edit) and the answer's `output.choices[].message.content[].image` are URLs.
Sizes are written `<width>*<height>`; image URLs stay valid for 24 hours.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.errors import BadRequestError
from gateway.providers.base import EditFile

SYNTHESIS_PATH = "/services/aigc/text2image/image-synthesis"
GENERATION_PATH = "/services/aigc/multimodal-generation/generation"
TASK_PATH = "/tasks/"
# The task states of DashScope's task API: still under way, done, or ended without images.
TASK_RUNNING = frozenset({"PENDING", "RUNNING"})
TASK_SUCCEEDED = "SUCCEEDED"
# Models served only by the async task API; every other model is asked synchronously unless the deployment says
# `image_api: async`.
_ASYNC_MODELS = re.compile(r"^(qwen-image|qwen-image-plus)(-\d{4}-\d\d-\d\d)?$|^wanx|^wan2\.[0-5]-t2i")
# qwen-image, -plus and -max answer only these sizes (their `size` parameter table); the others take any width and
# height from 512 to 2048 pixels.
PRESET_SIZES = ("1664x928", "1472x1104", "1328x1328", "1104x1472", "928x1664")
_PRESET_MODELS = re.compile(r"^qwen-image(-plus|-max)?(-\d{4}-\d\d-\d\d)?$")
FREE_SIDE = (512, 2048)
# OpenAI fields read here; what else the client sends is a provider extra, passed on in `parameters`.
_OPENAI_FIELDS = frozenset({"model", "prompt", "n", "size", "quality", "response_format", "user", "image", "stream"})
_INPUT_EXTRAS = frozenset({"negative_prompt"})  # the task API reads these from `input`, the sync one from parameters


def image_api(model: str, configured: str | None) -> str:
    """`async` or `sync`: the deployment's `image_api`, else what the model is served by."""
    if configured is not None:
        return configured
    return "async" if _ASYNC_MODELS.match(model) else "sync"


def size_problem(model: str, size: Any) -> str | None:
    """Why `model` cannot make images of `size` (`<w>x<h>`), naming the sizes it can; None when it can."""
    if size is None or size == "auto":
        return None
    width, _, height = str(size).partition("x")
    if _PRESET_MODELS.match(model):
        if size not in PRESET_SIZES:
            return f"size '{size}' is not served by {model}; it serves {', '.join(PRESET_SIZES)} (or 'auto')"
    elif not all(side.isdigit() and FREE_SIDE[0] <= int(side) <= FREE_SIDE[1] for side in (width, height)):
        low, high = FREE_SIDE
        return f"size '{size}' is not served by {model}: width and height must each be {low} to {high} pixels"
    return None


def dashscope_size(model: str, size: Any) -> str | None:
    """`1024x1024` -> `1024*1024`; None for `auto` or no size (the model's default). A size the model does not
    serve is the client's 400 (routing leaves such a target out before, see providers/images.py)."""
    problem = size_problem(model, size)
    if problem is not None:
        raise BadRequestError(problem + ".", param="size")
    if size is None or size == "auto":
        return None
    width, _, height = str(size).partition("x")
    return f"{width}*{height}"


def openai_size(size: str) -> str:
    """`1024*1024` -> `1024x1024`."""
    return size.replace("*", "x")


def _parameters(body: Mapping[str, Any], model: str, *, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    parameters = {k: v for k, v in body.items() if k not in _OPENAI_FIELDS and k not in skip and v is not None}
    size = dashscope_size(model, body.get("size"))
    if size is not None:
        parameters["size"] = size
    if body.get("n") is not None:
        parameters["n"] = body["n"]
    return parameters


def task_body(model: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """An images/generations request as a DashScope image-synthesis task."""
    task_input: dict[str, Any] = {"prompt": body["prompt"]}
    task_input.update((k, body[k]) for k in _INPUT_EXTRAS if body.get(k) is not None)
    return {"model": model, "input": task_input, "parameters": _parameters(body, model, skip=_INPUT_EXTRAS)}


def generation_body(model: str, body: Mapping[str, Any], images: Sequence[EditFile] = ()) -> dict[str, Any]:
    """An images/generations (or, with `images`, images/edits) request as a multimodal-generation call; an edit's
    images go as data URLs, before the text, as Model Studio's image-editing reference shows."""
    content: list[dict[str, str]] = [{"image": _data_url(item)} for item in images]
    content.append({"text": body["prompt"]})
    return {
        "model": model,
        "input": {"messages": [{"role": "user", "content": content}]},
        "parameters": _parameters(body, model),
    }


def _data_url(item: EditFile) -> str:
    media = item.content_type if item.content_type.startswith("image/") else "image/png"
    return f"data:{media};base64,{base64.b64encode(item.data).decode()}"


def task_id(data: Any) -> str | None:
    """The id of a submitted task (`output.task_id`)."""
    output = data.get("output") if isinstance(data, dict) else None
    value = output.get("task_id") if isinstance(output, dict) else None
    return value if isinstance(value, str) and value else None


def task_state(data: Any) -> tuple[str, list[str], str, str]:
    """(task_status, image URLs, code, message) of a task query's answer; a result without a URL (one image of
    several that failed) is left out."""
    output = data.get("output") if isinstance(data, dict) else None
    if not isinstance(output, dict):
        return "UNKNOWN", [], "", "the task query's answer has no output"
    results = output.get("results")
    urls = [r["url"] for r in results if isinstance(r, dict) and isinstance(r.get("url"), str)] if isinstance(
        results, list) else []
    return str(output.get("task_status") or "UNKNOWN"), urls, str(output.get("code") or ""), str(
        output.get("message") or "")


def generation_urls(data: Any) -> list[str]:
    """The image URLs of a multimodal-generation answer (`output.choices[].message.content[].image`)."""
    output = data.get("output") if isinstance(data, dict) else None
    choices = output.get("choices") if isinstance(output, dict) else None
    urls: list[str] = []
    for choice in choices if isinstance(choices, list) else []:
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and isinstance(part.get("image"), str):
                urls.append(part["image"])
    return urls


# The sizes OpenAI's ImagesResponse may name; another size is left out of the answer (the field is optional).
_ANSWERED_SIZES = frozenset({"1024x1024", "1024x1536", "1536x1024"})


def images_response(items: Sequence[tuple[str, str]], size: str | None) -> dict[str, Any]:
    """OpenAI's ImagesResponse: `items` are (`url` or `b64_json`, value) pairs; `size` in DashScope's words."""
    answer: dict[str, Any] = {"created": int(time.time()), "data": [{key: value} for key, value in items]}
    if size is not None and openai_size(size) in _ANSWERED_SIZES:
        answer["size"] = openai_size(size)
    return answer
