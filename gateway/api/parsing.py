"""Read one request once: size limit, JSON body, the few fields routing needs, hints, token estimate."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from starlette.datastructures import Headers

from gateway.api.session import leading_key, session_key
from gateway.errors import BadRequestError
from gateway.policy.plan import RequestFacts
from gateway.policy.table import Tenant
from gateway.providers.base import Endpoint, Upload, Usage

_HINT = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_TAGS = 16
IMAGE_TOKEN_ESTIMATE = 1000  # also the estimate of one audio or video part
# Content parts that are not text: the capability each needs (Model Studio's Omni takes `video_url` parts and
# `video` parts, a list of frame URLs).
_MEDIA_NEEDS = {
    "image_url": "vision", "input_image": "vision", "image": "vision",
    "input_audio": "audio_in", "video_url": "video_in", "video": "video_in",
}
CAPABILITIES = ("tools", "vision", "audio_in", "audio_out", "video_in")  # the vocabulary a request may need
_REQUIRED = {Endpoint.CHAT: "messages", Endpoint.COMPLETION: "prompt", Endpoint.EMBEDDING: "input"}
# `metadata` follows OpenAI's documented limits, so that a request a self-hosted target accepts is not refused by a
# cloud target it falls back to; polyroute's own `tags` hint may also be an array.
MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
_METADATA_RULE = (
    f"at most {MAX_METADATA_KEYS} keys of at most {MAX_METADATA_KEY_CHARS} characters, "
    f"each value a string of at most {MAX_METADATA_VALUE_CHARS} characters ('tags' may also be an array)"
)


@dataclass(slots=True)  # one per request: a frozen dataclass costs several times as much to build
class ParsedRequest:
    """A request body read once; `body` is forwarded upstream with only `model` (and stream usage) changed."""

    endpoint: Endpoint
    body: dict[str, Any]
    model: str
    stream: bool
    client_wants_usage: bool
    prompt_tokens: int
    max_output_tokens: int | None
    needs: frozenset[str]
    data_class: str | None
    tags: frozenset[str]
    session: str | None = None  # affinity key (gateway.api.session)
    upload: Upload | None = None  # a transcription's audio file (its other fields are in `body`)
    metered: Usage | None = None  # what the request itself tells of its use: seconds of a WAV, characters to speak
    images: int = 0  # an image request: how many it asks for, and at which `<size>/<quality>`
    image_variant: str = ""


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object, or a 400 saying what it is instead."""
    if not raw:
        raise BadRequestError("Request body is empty; expected a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequestError("Request body must be a JSON object.")
    return body


def parse_request(raw: bytes, endpoint: Endpoint, headers: Headers) -> ParsedRequest:
    """Validate just what routing needs; every other field is passed through untouched."""
    return read_request(json_object(raw), endpoint, headers)


def read_request(body: dict[str, Any], endpoint: Endpoint, headers: Headers) -> ParsedRequest:
    """What routing needs of a body already decoded (a Messages or Responses body's Chat translation)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequestError("You must provide a model parameter (a non-empty string).", param="model")
    required = _REQUIRED[endpoint]
    if required not in body:
        raise BadRequestError(f"Missing required parameter: '{required}'.", param=required)
    stream = body.get("stream", False)
    if not isinstance(stream, bool | None):
        raise BadRequestError("'stream' must be a boolean.", param="stream")
    if endpoint is Endpoint.EMBEDDING and stream:
        raise BadRequestError("Embeddings cannot be streamed.", param="stream")
    options = body.get("stream_options")
    wants_usage = isinstance(options, dict) and options.get("include_usage") is True
    max_out = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_out is not None and (not isinstance(max_out, int) or isinstance(max_out, bool) or max_out < 0):
        raise BadRequestError("'max_tokens' must be a non-negative integer.", param="max_tokens")
    tokens, needs = estimate_prompt(body, endpoint)
    data_class, tags = read_hints(headers, body.get("metadata"))
    session = session_key(headers, body)
    return ParsedRequest(
        endpoint=endpoint,
        body=body,
        model=model,
        stream=bool(stream),
        client_wants_usage=wants_usage,
        prompt_tokens=tokens,
        max_output_tokens=max_out,
        needs=needs,
        data_class=data_class,
        tags=tags,
        session=session,
    )


def estimate_prompt(body: dict[str, Any], endpoint: Endpoint) -> tuple[int, frozenset[str]]:
    """About four characters a token; images, audio and video parts at a flat estimate. Also which capabilities the
    body needs (of CAPABILITIES)."""
    chars = 0
    images = 0
    needs: set[str] = set()
    if endpoint is Endpoint.CHAT:
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            raise BadRequestError("'messages' must be a non-empty array.", param="messages")
        for message in messages:
            if not isinstance(message, dict):
                raise BadRequestError("Each message must be an object.", param="messages")
            content = message.get("content")
            if isinstance(content, str):
                chars += len(content) + 16
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict):
                        kind = part.get("type")
                        if kind == "text":
                            chars += len(str(part.get("text", "")))
                        elif isinstance(kind, str) and kind in _MEDIA_NEEDS:
                            images += 1
                            needs.add(_MEDIA_NEEDS[kind])
            if message.get("tool_calls"):
                chars += len(orjson.dumps(message["tool_calls"]))
        modalities = body.get("modalities")
        if isinstance(modalities, list) and "audio" in modalities:
            needs.add("audio_out")
        if body.get("tools") or body.get("functions"):
            needs.add("tools")
            chars += len(orjson.dumps(body.get("tools") or body.get("functions")))
    else:
        param = "prompt" if endpoint is Endpoint.COMPLETION else "input"
        chars = _text_size(body[param], param)
    return max(1, chars // 4) + images * IMAGE_TOKEN_ESTIMATE, frozenset(needs)


def _text_size(value: Any, param: str) -> int:
    """The size of a prompt or an input in the shapes OpenAI accepts: a string, or a non-empty array of strings, of
    token ids or of non-empty token id arrays (each id counted as four characters). Any other shape is the client's
    400 here, not a failure of whichever target would have refused it."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list) and value:
        total = 0
        for item in value:
            if isinstance(item, str):
                total += len(item)
            elif _is_token(item):
                total += 4
            elif isinstance(item, list) and item and all(_is_token(token) for token in item):
                total += 4 * len(item)
            else:
                break
        else:
            return total
    raise BadRequestError(
        f"'{param}' must be a string, or a non-empty array of strings, of token ids or of token id arrays.",
        param=param,
    )


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_hints(headers: Headers, metadata: Any) -> tuple[str | None, frozenset[str]]:
    """Routing hints from `x-polyroute-data-class` / `x-polyroute-tags` or the body's `metadata`."""
    meta = _checked_metadata(metadata)
    class_header, tags_header = headers.get("x-polyroute-data-class"), headers.get("x-polyroute-tags")
    data_class = class_header or meta.get("data_class")
    raw_tags = tags_header or meta.get("tags")
    # A bad hint is reported where the client put it.
    class_param = "x-polyroute-data-class" if class_header else "metadata.data_class"
    tags_param = "x-polyroute-tags" if tags_header else "metadata.tags"
    if data_class is not None:
        if not isinstance(data_class, str) or not _HINT.match(data_class.strip()):
            raise BadRequestError(
                "data class must be 1-64 characters of letters, digits, '_', '.', ':' or '-'.", param=class_param
            )
        data_class = data_class.strip().lower()
    tags: list[str] = []
    if isinstance(raw_tags, str):
        tags = [t.strip() for t in raw_tags.split(",") if t.strip()]
    elif isinstance(raw_tags, list) and all(isinstance(t, str) for t in raw_tags[: MAX_TAGS + 1]):
        tags = [t.strip() for t in raw_tags[: MAX_TAGS + 1] if t.strip()]
    elif raw_tags is not None:
        raise BadRequestError("tags must be a comma-separated string or an array of strings.", param=tags_param)
    if len(tags) > MAX_TAGS or not all(_HINT.match(t) for t in tags):
        raise BadRequestError(
            f"at most {MAX_TAGS} tags, each 1-64 characters of letters, digits, '_', '.', ':' or '-'.",
            param=tags_param,
        )
    return data_class, frozenset(t.lower() for t in tags)


def _checked_metadata(metadata: Any) -> dict[str, Any]:
    """The body's `metadata`, refused (400, naming the limit) when it is not an object within OpenAI's limits."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise BadRequestError(f"'metadata' must be an object: {_METADATA_RULE}.", param="metadata")
    if len(metadata) > MAX_METADATA_KEYS:
        raise BadRequestError(
            f"'metadata' has {len(metadata)} keys; it may have {_METADATA_RULE}.", param="metadata"
        )
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY_CHARS:
            raise BadRequestError(
                f"a 'metadata' key is {len(key)} characters long; metadata may have {_METADATA_RULE}.",
                param="metadata",
            )
        if isinstance(value, str):
            if len(value) > MAX_METADATA_VALUE_CHARS:
                raise BadRequestError(
                    f"'metadata.{key}' is {len(value)} characters long; metadata may have {_METADATA_RULE}.",
                    param="metadata",
                )
        elif not (key == "tags" and isinstance(value, list)):
            raise BadRequestError(
                f"'metadata.{key}' is not a string; metadata may have {_METADATA_RULE}.", param="metadata"
            )
    return metadata


def _leading(parsed: ParsedRequest) -> Callable[[], str] | None:
    """The leading messages' hash, as a call: only a spill-over alias pays for it."""
    if parsed.session is not None or parsed.endpoint is not Endpoint.CHAT:
        return None
    return partial(leading_key, parsed.body["messages"])


def request_facts(parsed: ParsedRequest, tenant: Tenant) -> RequestFacts:
    """What the routing engine sees of a parsed request and its tenant."""
    return RequestFacts(
        alias=parsed.model,
        tenant=tenant.name,
        endpoint=parsed.endpoint.value,
        stream=parsed.stream,
        data_class=parsed.data_class,
        tags=parsed.tags,
        prompt_tokens=parsed.prompt_tokens,
        max_output_tokens=parsed.max_output_tokens,
        needs=parsed.needs,
        allowed_aliases=tenant.models,
        session=parsed.session,
        leading_key=_leading(parsed),
        images=parsed.images,
        image_variant=parsed.image_variant,
    )
