"""SIMULATED image APIs: Model Studio's native DashScope image API (async tasks and the sync multimodal-generation
call) and an OpenAI-compatible `/v1/images/generations` and `/v1/images/edits` (the vLLM flavor), each returning
URLs of a small real PNG that the simulator serves itself.

Task states advance one per query: PENDING, RUNNING, then SUCCEEDED (or FAILED with `output.code` and
`output.message` for the `task_failed` fault; RUNNING for ever for `task_stuck`). An unknown task id is UNKNOWN.
Errors use DashScope's native body `{"request_id", "code", "message"}`.
"""

from __future__ import annotations

import base64
import re
import struct
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import orjson
from aiohttp import web

from gateway.demo.sim_faults import FAULT_HEADER, NAMED_ERRORS, Fault, parse_fault_header
from gateway.demo.sim_flavors import SimError

if TYPE_CHECKING:
    from gateway.demo.sim_server import SimulatedUpstream

SYNTHESIS = "/api/v1/services/aigc/text2image/image-synthesis"
GENERATION = "/api/v1/services/aigc/multimodal-generation/generation"
TASKS = "/api/v1/tasks/{task_id}"
IMAGE_FILES = "/_sim/images/{name}"
MAX_TASKS = 1000  # tasks remembered; older ones are UNKNOWN, as expired tasks are
_PRESET = ("1664*928", "1472*1104", "1328*1328", "1104*1472", "928*1664")
_PRESET_MODELS = re.compile(r"^qwen-image(-plus|-max)?(-\d{4}-\d\d-\d\d)?$")
_SIZE = re.compile(r"^(\d{3,4})\*(\d{3,4})$")
# DashScope's codes for the named faults (its native bodies carry no `type`).
_NATIVE_CODES = {
    "throttling": "Throttling.RateQuota",
    "data_inspection": "DataInspectionFailed",
    "invalid_key": "InvalidApiKey",
    "internal": "InternalError",
    "arrearage": "Arrearage",
    "insufficient_quota": "Throttling.AllocationQuota",
    "quota_exhausted": "Throttling.AllocationQuota",
}


def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PNG = _png(8, 8, (64, 128, 192))


@dataclass
class _Task:
    model: str
    prompt: str
    n: int
    polls: int = 0
    fault: Fault | None = None


class SimulatedImages:
    """The image routes of one simulated upstream (its fault queue, auth and statistics are the upstream's)."""

    def __init__(self, upstream: SimulatedUpstream) -> None:
        self.up = upstream
        self.tasks: OrderedDict[str, _Task] = OrderedDict()

    def routes(self) -> list[tuple[str, str, Any]]:
        shared = [("GET", IMAGE_FILES, self.image_file)]
        if self.up.flavor.name == "modelstudio":
            return [*shared, ("POST", SYNTHESIS, self.submit), ("GET", TASKS, self.task),
                    ("POST", GENERATION, self.generate)]
        if self.up.flavor.name == "vllm":
            return [*shared, ("POST", "/v1/images/generations", self.openai_generate),
                    ("POST", "/v1/images/edits", self.openai_edit)]
        return []

    # ---- shared ------------------------------------------------------------------------------------------------

    async def image_file(self, request: web.Request) -> web.Response:
        self.up._record(request, None)
        return web.Response(body=PNG, content_type="image/png")

    def _url(self, request: web.Request, key: str, index: int) -> str:
        return f"{request.scheme}://{request.host}/_sim/images/{key}-{index}.png?Expires={int(time.time()) + 86400}"

    def _admit(self, request: web.Request, body: Any) -> tuple[str, Fault | None] | web.Response:
        """Record, check the key, the body and the model; take the fault this request gets."""
        up = self.up
        up._record(request, body)
        if up._auth is not None and request.headers.get("Authorization") != up._auth:
            return self._native_error("invalid_key", up.flavor.errors["invalid_key"])
        if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
            return self._native_error("", SimError(400, "Model not exist.", code="InvalidParameter"))
        model = body["model"]
        up.by_model[model] += 1
        try:
            header = request.headers.get(FAULT_HEADER)
            fault = parse_fault_header(header) if header else up.faults.take(model)
        except ValueError as exc:
            return self._native_error("", SimError(400, str(exc), code="InvalidParameter"))
        if fault is not None:
            up.faults_served[fault.kind] += 1
            if fault.kind in NAMED_ERRORS or fault.kind == "status":
                error = up.flavor.errors[fault.kind] if fault.kind in NAMED_ERRORS else up.flavor.status_error(
                    fault.status, fault.message, fault.code)
                return self._native_error(fault.kind, error, fault.retry_after)
        return model, fault

    def _native_error(self, kind: str, error: SimError, retry_after: str | None = None) -> web.Response:
        if self.up.flavor.name != "modelstudio":
            return self.up._error(error, retry_after)
        code = _NATIVE_CODES.get(kind) or (str(error.code) if error.code is not None else "InvalidParameter")
        body = {"request_id": str(uuid4()), "code": code, "message": error.message}
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        return web.Response(status=error.status, body=orjson.dumps(body), content_type="application/json",
                            headers=headers)

    def _bad(self, message: str) -> web.Response:
        return self._native_error("", SimError(400, message, code="InvalidParameter"))

    def _size_problem(self, model: str, parameters: dict[str, Any]) -> str | None:
        size = parameters.get("size")
        if size is None:
            return None
        if _PRESET_MODELS.match(model):
            return None if size in _PRESET else f"The size is not match the allowed size {', '.join(_PRESET)}"
        match = _SIZE.match(str(size))
        if match is None or not all(512 <= int(side) <= 2048 for side in match.groups()):
            return "The size of the image should be in [512, 2048] for both width and height, like 1024*1024"
        return None

    # ---- DashScope: async task API -----------------------------------------------------------------------------

    async def submit(self, request: web.Request) -> web.Response:
        body = await _json(request)
        admitted = self._admit(request, body)
        if isinstance(admitted, web.Response):
            return admitted
        model, fault = admitted
        if request.headers.get("X-DashScope-Async") != "enable":
            return self._native_error("", SimError(403, "current user api does not support synchronous calls",
                                                   code="AccessDenied"))
        task_input, parameters = body.get("input"), body.get("parameters") or {}
        if not isinstance(task_input, dict) or not isinstance(task_input.get("prompt"), str):
            return self._bad("Field required: input.prompt")
        if (problem := self._size_problem(model, parameters)) is not None:
            return self._bad(problem)
        task_id = str(uuid4())
        self.tasks[task_id] = _Task(model, task_input["prompt"], int(parameters.get("n") or 1), fault=fault)
        while len(self.tasks) > MAX_TASKS:
            self.tasks.popitem(last=False)
        return _ok({"request_id": str(uuid4()), "output": {"task_status": "PENDING", "task_id": task_id}})

    async def task(self, request: web.Request) -> web.Response:
        self.up._record(request, None)
        if self.up._auth is not None and request.headers.get("Authorization") != self.up._auth:
            return self._native_error("invalid_key", self.up.flavor.errors["invalid_key"])
        task_id = request.match_info["task_id"]
        task = self.tasks.get(task_id)
        output: dict[str, Any] = {"task_id": task_id}
        if task is None:
            return _ok({"request_id": str(uuid4()), "output": {**output, "task_status": "UNKNOWN"}})
        task.polls += 1
        kind = task.fault.kind if task.fault is not None else ""
        if task.polls == 1 or kind == "task_stuck":
            state = "PENDING" if task.polls == 1 else "RUNNING"
            return _ok({"request_id": str(uuid4()), "output": {**output, "task_status": state}})
        if task.polls == 2:
            return _ok({"request_id": str(uuid4()), "output": {**output, "task_status": "RUNNING"}})
        if kind == "task_failed":
            assert task.fault is not None
            output.update(task_status="FAILED", code=str(task.fault.code or "InternalError.Algo"),
                          message=task.fault.message or "The image task failed: an internal error occurred.")
            return _ok({"request_id": str(uuid4()), "output": output})
        results = [{"orig_prompt": task.prompt, "actual_prompt": task.prompt, "url": self._url(request, task_id, i)}
                   for i in range(task.n)]
        output.update(task_status="SUCCEEDED", results=results,
                      task_metrics={"TOTAL": task.n, "SUCCEEDED": task.n, "FAILED": 0})
        return _ok({"request_id": str(uuid4()), "output": output, "usage": {"image_count": task.n}})

    # ---- DashScope: sync multimodal-generation -----------------------------------------------------------------

    async def generate(self, request: web.Request) -> web.Response:
        body = await _json(request)
        admitted = self._admit(request, body)
        if isinstance(admitted, web.Response):
            return admitted
        model, _ = admitted
        messages = (body.get("input") or {}).get("messages") if isinstance(body.get("input"), dict) else None
        content = messages[0].get("content") if isinstance(messages, list) and messages and isinstance(
            messages[0], dict) else None
        if not isinstance(content, list) or not any(isinstance(p, dict) and "text" in p for p in content):
            return self._bad("Field required: input.messages[0].content[].text")
        images = [p["image"] for p in content if isinstance(p, dict) and "image" in p]
        if "edit" in model and not images:
            return self._bad("An image editing model needs at least one input image.")
        if any(not str(image).startswith(("data:image/", "http://", "https://")) for image in images):
            return self._bad("The image must be a URL or a data URL (data:image/<format>;base64,...).")
        parameters = body.get("parameters") or {}
        if (problem := self._size_problem(model, parameters)) is not None:
            return self._bad(problem)
        n = int(parameters.get("n") or 1)
        key = str(uuid4())
        answer = {
            "output": {"choices": [{"finish_reason": "stop", "message": {
                "role": "assistant", "content": [{"image": self._url(request, key, i)} for i in range(n)]}}]},
            "usage": {"width": 8, "height": 8, "image_count": n},
            "request_id": str(uuid4()),
        }
        return _ok(answer)

    # ---- OpenAI-compatible (vLLM flavor) -----------------------------------------------------------------------

    async def openai_generate(self, request: web.Request) -> web.Response:
        body = await _json(request)
        admitted = self._admit(request, body)
        if isinstance(admitted, web.Response):
            return admitted
        if not isinstance(body.get("prompt"), str):
            return self.up._error(SimError(400, "prompt is required"))
        return self._openai_images(request, body)

    async def openai_edit(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        files = [k for k, v in form.items() if isinstance(v, web.FileField)]
        body: dict[str, Any] = {**fields, "files": files}
        if "n" in fields:
            body["n"] = int(fields["n"])
        admitted = self._admit(request, body)
        if isinstance(admitted, web.Response):
            return admitted
        if not any(name in ("image", "image[]") for name in files) or "prompt" not in fields:
            return self.up._error(SimError(400, "image and prompt are required"))
        return self._openai_images(request, body)

    def _openai_images(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        n = int(body.get("n") or 1)
        key = str(uuid4())
        if body.get("response_format") == "b64_json":
            data = [{"b64_json": base64.b64encode(PNG).decode()} for _ in range(n)]
        else:
            data = [{"url": self._url(request, key, i)} for i in range(n)]
        return _ok({"created": int(time.time()), "data": data})


async def _json(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None


def _ok(payload: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")
