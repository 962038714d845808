"""How each simulated upstream (Model Studio, vLLM, Ollama) names its routes and shapes its error bodies."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from uuid import uuid4

import orjson


@dataclass(frozen=True, slots=True)
class SimError:
    """One error a simulated upstream answers with; the flavor turns it into its own body shape."""

    status: int
    message: str
    type: str | None = None  # None: the flavor's usual type for this status
    code: str | int | None = None  # None: the flavor's usual code for this status
    raw_payload: Mapping[str, Any] | None = None  # a body that follows no envelope at all (vLLM's 401)


@dataclass(frozen=True, slots=True)
class ThinkingModel:
    """How one simulated model thinks: by default or only when asked, only when streamed, up to which budget."""

    default_on: bool
    stream_only: bool
    max_budget: int


@dataclass(frozen=True, slots=True)
class Flavor:
    """The observable habits of one kind of OpenAI-compatible server."""

    name: str
    prefix: str
    owned_by: str
    default_models: tuple[str, ...]
    cached_tokens: bool  # usage carries prompt_tokens_details.cached_tokens
    thinking: bool  # honours `enable_thinking` with `reasoning_content`
    model_not_found: str  # message template with {model}
    errors: Mapping[str, SimError]  # named faults -> error
    envelope: Callable[[SimError], dict[str, Any]] = field(repr=False)
    messages_path: str = "/v1/messages"  # where it serves Anthropic Messages natively (Responses: prefix/responses)
    thinking_models: Mapping[str, ThinkingModel] = field(default_factory=dict)  # per-model rules (else: when asked)

    def payload(self, error: SimError) -> dict[str, Any]:
        """The JSON object this flavor sends for `error` (as a body, or inside an in-band stream frame)."""
        if error.raw_payload is not None:
            return dict(error.raw_payload)
        return self.envelope(error)

    def error_body(self, error: SimError) -> bytes:
        return orjson.dumps(self.payload(error))

    def status_error(self, status: int, message: str | None, code: str | int | None) -> SimError:
        """The error for the generic `status` fault."""
        if message is None:
            message = f"Simulated upstream error: {_phrase(status)}."
        return SimError(status=status, message=message, code=code)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _modelstudio_envelope(error: SimError) -> dict[str, Any]:
    if error.type is not None:
        err_type = error.type
    elif error.status == 429:
        err_type = "Throttling"
    elif error.status >= 500:
        err_type = "internal_error"
    else:
        err_type = "invalid_request_error"
    code = error.code if error.code is not None else _phrase(error.status).replace(" ", "")
    body: dict[str, Any] = {"error": {"message": error.message, "type": err_type, "param": None, "code": code}}
    if error.status != 404:  # its model-not-found body carries no `id`
        body["id"] = f"chatcmpl-{uuid4()}"
    body["request_id"] = str(uuid4())
    return body


def _vllm_envelope(error: SimError) -> dict[str, Any]:
    phrase = _phrase(error.status).replace(" ", "").replace("-", "")
    err_type = error.type or (phrase if phrase.endswith("Error") else phrase + "Error")
    return {
        "object": "error",
        "message": error.message,
        "type": err_type,
        "param": None,
        "code": error.code if error.code is not None else error.status,
    }


def _ollama_envelope(error: SimError) -> dict[str, Any]:
    if error.type is not None:
        err_type = error.type
    elif error.status == 400:
        err_type = "invalid_request_error"
    elif error.status == 404:
        err_type = "not_found_error"
    else:
        err_type = "api_error"
    return {"error": {"message": error.message, "type": err_type, "param": None, "code": error.code}}


_QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."
_CONTENT_MESSAGE = "Input data may contain inappropriate content."
# Model Studio's own words, from https://help.aliyun.com/en/model-studio/error-code and
# https://www.alibabacloud.com/help/en/model-studio/developer-reference/error-code (see README, Model Studio).
_MS_DOCS = "https://help.aliyun.com/en/model-studio/error-code"
_MS_CONTENT_MESSAGE = f"{_CONTENT_MESSAGE} For details, see: {_MS_DOCS}#inappropriate-content"
_ARREARAGE_MESSAGE = "Access denied, please make sure your account is in good standing."
_FREE_QUOTA_MESSAGE = "Free allocated quota exceeded."
_CONTEXT_MESSAGE = "<400> InternalError.Algo.InvalidParameter: Range of input length should be [1, 983616]"
_OTHERS_ACCOUNT_ERRORS = {  # the other flavors have no accounts: these faults answer in Model Studio's words
    "arrearage": SimError(400, _ARREARAGE_MESSAGE, "Arrearage", "Arrearage"),
    "quota_exhausted": SimError(429, _FREE_QUOTA_MESSAGE, "Throttling.AllocationQuota", "Throttling.AllocationQuota"),
}

MODELSTUDIO = Flavor(
    name="modelstudio",
    prefix="/compatible-mode/v1",
    owned_by="system",
    default_models=("qwen3.6-plus", "qwen-plus", "qwen-flash", "qwen3-32b", "text-embedding-v4"),
    cached_tokens=True,
    thinking=True,
    model_not_found="The model `{model}` does not exist or you do not have access to it.",
    errors={
        "throttling": SimError(
            429, "Requests rate limit exceeded, please try again later.", "Throttling.RateQuota", "Throttling.RateQuota"
        ),
        "insufficient_quota": SimError(429, _QUOTA_MESSAGE, "insufficient_quota", "insufficient_quota"),
        "data_inspection": SimError(400, _MS_CONTENT_MESSAGE, "data_inspection_failed", "data_inspection_failed"),
        "context_overflow": SimError(400, _CONTEXT_MESSAGE, "invalid_request_error", "invalid_parameter_error"),
        "arrearage": SimError(
            400, f"{_ARREARAGE_MESSAGE} For details, see: {_MS_DOCS}#overdue-payment", "Arrearage", "Arrearage"
        ),
        "quota_exhausted": _OTHERS_ACCOUNT_ERRORS["quota_exhausted"],
        "invalid_key": SimError(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
        "internal": SimError(
            500,
            "An internal error has occured, please try again later or contact service support.",
            "internal_error",
            "InternalError",
        ),
    },
    envelope=_modelstudio_envelope,
    messages_path="/apps/anthropic/v1/messages",
    # Hybrid Qwen 3.5/3.6 think unless told not to; open-source Qwen3 thinks only when streamed; each caps its
    # budget. https://www.alibabacloud.com/help/en/model-studio/deep-thinking (budgets: the simulator's own values)
    thinking_models={
        "qwen3.6-plus": ThinkingModel(default_on=True, stream_only=False, max_budget=81920),
        "qwen-plus": ThinkingModel(default_on=False, stream_only=False, max_budget=38912),
        "qwen-flash": ThinkingModel(default_on=False, stream_only=False, max_budget=38912),
        "qwen3-32b": ThinkingModel(default_on=True, stream_only=True, max_budget=38912),
    },
)

VLLM = Flavor(
    name="vllm",
    prefix="/v1",
    owned_by="vllm",
    default_models=("Qwen/Qwen3-32B",),
    cached_tokens=False,
    thinking=False,
    model_not_found="The model `{model}` does not exist.",
    errors={
        "throttling": SimError(429, "Too many requests, please try again later."),
        "insufficient_quota": SimError(429, _QUOTA_MESSAGE),
        "data_inspection": SimError(400, _CONTENT_MESSAGE),
        "context_overflow": SimError(
            400,
            "This model's maximum context length is 32768 tokens. However, you requested 40000 tokens "
            "(32000 in the messages, 8000 in the completion). Please reduce the length of the messages or completion.",
        ),
        "invalid_key": SimError(401, "Unauthorized", raw_payload={"error": "Unauthorized"}),
        "internal": SimError(500, "Internal server error"),
        **_OTHERS_ACCOUNT_ERRORS,
    },
    envelope=_vllm_envelope,
)

OLLAMA = Flavor(
    name="ollama",
    prefix="/v1",
    owned_by="library",
    default_models=("qwen3:32b", "nomic-embed-text"),
    cached_tokens=False,
    thinking=False,
    model_not_found='model "{model}" not found, try pulling it first',
    errors={
        "throttling": SimError(429, "server busy, please try again.  maximum pending requests exceeded"),
        "insufficient_quota": SimError(429, _QUOTA_MESSAGE),
        "data_inspection": SimError(400, _CONTENT_MESSAGE),
        "context_overflow": SimError(400, "the input length exceeds the context length"),
        "invalid_key": SimError(401, "unauthorized"),
        "internal": SimError(500, "llama runner process has terminated: exit status 2"),
        **_OTHERS_ACCOUNT_ERRORS,
    },
    envelope=_ollama_envelope,
)

FLAVORS: Mapping[str, Flavor] = {flavor.name: flavor for flavor in (MODELSTUDIO, VLLM, OLLAMA)}
