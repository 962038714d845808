"""The bodies of the proxied endpoints as polyroute reads and writes them, for the OpenAPI document only.

These models are never used to validate a request or a response at runtime (the proxied routes read the few fields
routing needs from raw bytes, see api/parsing.py): they describe OpenAI's and Anthropic's shapes as far as polyroute
reads or writes them, and every one of them allows the fields it does not name, as the upstreams do.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Open(BaseModel):
    """A protocol object: the fields polyroute reads or writes, and any others, passed through."""

    model_config = ConfigDict(extra="allow")


Metadata = dict[str, str | list[str]]
METADATA_HINTS = (
    "Routing hints in the body, the same as the headers: `tags` (comma list or array) and `data_class`, beside "
    "any other key (at most 16 keys; values at most 512 characters)."
)


# --- errors ---
class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(BaseModel):
    """OpenAI's error envelope, on every path but /v1/messages."""

    error: ErrorDetail


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicErrorEnvelope(Open):
    """Anthropic's error shape, on /v1/messages and under it."""

    type: Literal["error"]
    error: AnthropicErrorDetail


# --- OpenAI Chat Completions ---
class ChatMessage(Open):
    role: str
    content: str | list[Any] | None = None


class StreamOptions(Open):
    include_usage: bool | None = None


class ChatCompletionRequest(Open):
    model: str = Field(min_length=1, description="An alias of the gateway's policy (GET /v1/models lists them).")
    messages: list[ChatMessage]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    tools: list[Any] | None = None
    metadata: Metadata | None = Field(default=None, description=METADATA_HINTS)


class Usage(Open):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class ChatChoice(Open):
    index: int
    message: ChatMessage | None = None
    finish_reason: str | None = None


class ChatCompletion(Open):
    id: str
    object: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


# --- OpenAI Completions (legacy) ---
class CompletionRequest(Open):
    model: str = Field(min_length=1, description="An alias of the gateway's policy.")
    prompt: str | list[Any]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=0)
    metadata: Metadata | None = Field(default=None, description=METADATA_HINTS)


class CompletionChoice(Open):
    index: int
    text: str
    finish_reason: str | None = None


class Completion(Open):
    id: str
    object: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


# --- OpenAI Embeddings ---
class EmbeddingRequest(Open):
    model: str = Field(min_length=1, description="An alias of the gateway's policy.")
    input: str | list[Any]
    metadata: Metadata | None = Field(default=None, description=METADATA_HINTS)


class Embedding(Open):
    index: int
    embedding: list[float] | str
    object: str | None = None


class EmbeddingList(Open):
    object: str
    data: list[Embedding]
    model: str
    usage: Usage | None = None


# --- OpenAI Images ---
class ImageRequest(Open):
    model: str = Field(min_length=1, description="An alias of kind image in the gateway's policy.")
    prompt: str = Field(min_length=1)
    n: int | None = Field(default=None, ge=1, le=10)
    size: str | None = Field(default=None, pattern=r"^(auto|[1-9][0-9]{1,4}x[1-9][0-9]{1,4})$")
    quality: Literal["standard", "hd", "low", "medium", "high", "auto"] | None = None
    response_format: Literal["url", "b64_json"] | None = None
    metadata: Metadata | None = Field(default=None, description=METADATA_HINTS)


class ImageEditRequest(BaseModel):
    """An edit as multipart/form-data fields (`image[]` for several images); other fields pass through."""

    model: str = Field(min_length=1, description="An alias of kind image in the gateway's policy.")
    prompt: str = Field(min_length=1)
    image: bytes = Field(json_schema_extra={"format": "binary"})
    n: int | None = Field(default=None, ge=1, le=10)
    size: str | None = None
    response_format: Literal["url", "b64_json"] | None = None


class Image(Open):
    url: str | None = None
    b64_json: str | None = None


class ImagesResponse(Open):
    created: int
    data: list[Image]


# --- OpenAI Responses ---
class ResponseRequest(Open):
    model: str = Field(min_length=1, description="An alias of the gateway's policy.")
    input: str | list[Any] | None = None
    instructions: str | None = None
    stream: bool | None = False
    max_output_tokens: int | None = Field(default=None, ge=0)
    tools: list[Any] | None = None
    metadata: Metadata | None = Field(default=None, description=METADATA_HINTS)


class ResponseObject(Open):
    id: str
    object: Literal["response"]
    created_at: float
    model: str
    status: str
    output: list[Any]
    usage: Open | None = None


# --- Anthropic Messages ---
class AnthropicMessage(Open):
    role: str
    content: str | list[Any]


class MessagesRequest(Open):
    model: str = Field(min_length=1, description="An alias of the gateway's policy.")
    messages: list[AnthropicMessage]
    max_tokens: int = Field(ge=0)
    system: str | list[Any] | None = None
    stream: bool | None = False
    tools: list[Any] | None = None
    metadata: Open | None = None


class CountTokensRequest(Open):
    model: str = Field(min_length=1, description="An alias of the gateway's policy.")
    messages: list[AnthropicMessage]
    system: str | list[Any] | None = None
    tools: list[Any] | None = None


class MessageObject(Open):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[Any]
    stop_reason: str | None = None
    usage: Open | None = None
