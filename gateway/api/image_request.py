"""Read one OpenAI Images request once: `images/generations` (JSON) and `images/edits` (multipart), checked against
the fields of OpenAI's CreateImageRequest / CreateImageEditRequest; every other field is passed through."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from gateway.api.parsing import ParsedRequest, json_object, read_hints
from gateway.errors import BadRequestError
from gateway.providers.base import Endpoint
from gateway.providers.images import image_variant

MAX_IMAGES = 10  # OpenAI's `n`: 1 to 10
MAX_EDIT_IMAGES = 16  # OpenAI's `image[]` array
MAX_FIELD_BYTES = 1024 * 1024  # one text field of a multipart body (a prompt is at most 32,000 characters)
QUALITIES = frozenset({"standard", "hd", "low", "medium", "high", "auto"})
RESPONSE_FORMATS = frozenset({"url", "b64_json"})
_SIZE = re.compile(r"^(auto|[1-9][0-9]{1,4}x[1-9][0-9]{1,4})$")
_INT_FIELDS = frozenset({"n", "output_compression", "partial_images", "seed"})


@dataclass(frozen=True, slots=True)
class ImageFile:
    """One file of an edit request, held in memory (the whole body is within POLYROUTE_MAX_BODY_BYTES)."""

    filename: str
    content_type: str
    data: bytes


def read_image_body(body: dict[str, Any], endpoint: Endpoint, headers: Headers) -> ParsedRequest:
    """Check the fields polyroute reads or translates; the rest is the provider's (extras pass through)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequestError("You must provide a model parameter (a non-empty string).", param="model")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRequestError("Missing required parameter: 'prompt' (a non-empty string).", param="prompt")
    n = body.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_IMAGES):
        raise BadRequestError(f"'n' must be an integer from 1 to {MAX_IMAGES}.", param="n")
    _one_of(body, "response_format", RESPONSE_FORMATS)
    _one_of(body, "quality", QUALITIES)
    size = body.get("size")
    if size is not None and (not isinstance(size, str) or not _SIZE.match(size)):
        raise BadRequestError("'size' must be 'auto' or '<width>x<height>' in pixels, e.g. '1024x1024'.",
                              param="size")
    if body.get("stream"):
        raise BadRequestError("Streaming image generation is not supported by this gateway; leave 'stream' out.",
                              param="stream")
    data_class, tags = read_hints(headers, body.get("metadata"))
    body.pop("metadata", None)  # polyroute's hint: the Images API has no such field
    return ParsedRequest(
        endpoint=endpoint, body=body, model=model, stream=False, client_wants_usage=False,
        prompt_tokens=0,  # not a token request: TPM limits do not apply to images, RPM and budgets do
        max_output_tokens=0, needs=frozenset(), data_class=data_class, tags=tags,
        images=n or 1, image_variant=image_variant(body),
    )


def _one_of(body: dict[str, Any], name: str, allowed: frozenset[str]) -> None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or value not in allowed):
        raise BadRequestError(f"'{name}' must be one of {', '.join(sorted(allowed))}.", param=name)


def parse_generation(raw: bytes, endpoint: Endpoint, headers: Headers) -> ParsedRequest:
    """POST /v1/images/generations: a JSON body."""
    return read_image_body(json_object(raw), endpoint, headers)


async def parse_edit(raw: bytes, headers: Headers) -> ParsedRequest:
    """POST /v1/images/edits: a multipart/form-data body (the openai client's `images.edit`), parsed by Starlette's
    parser (python-multipart) from the bytes already read within the body limit. `image` (or `image[]`) files
    become a list of ImageFile, `mask` one; text fields stay strings, the integer ones become integers."""
    if not headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise BadRequestError("An image edit is sent as multipart/form-data (the 'image' file and the 'prompt').")

    async def once() -> AsyncGenerator[bytes, None]:
        yield raw

    parser = MultiPartParser(headers, once(), max_files=MAX_EDIT_IMAGES + 1, max_part_size=MAX_FIELD_BYTES)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadRequestError(f"The multipart body could not be read: {exc.message}") from exc
    body: dict[str, Any] = {}
    images: list[ImageFile] = []
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                item = ImageFile(value.filename or "image.png", value.content_type or "application/octet-stream",
                                 await value.read())
                if name in ("image", "image[]"):
                    images.append(item)
                elif name == "mask":
                    body["mask"] = item
                else:
                    raise BadRequestError(f"Unexpected file field '{name[:64]}'.", param=name[:64])
            else:
                body[name] = _field(name, value)
    finally:
        await form.close()
    if not images:
        raise BadRequestError("Missing required parameter: 'image' (the image file to edit).", param="image")
    body["image"] = images
    return read_image_body(body, Endpoint.IMAGE_EDIT, headers)


def _field(name: str, value: str) -> Any:
    if name in _INT_FIELDS:
        try:
            return int(value)
        except ValueError:
            raise BadRequestError(f"'{name}' must be an integer.", param=name) from None
    if name == "stream":
        return value.strip().lower() == "true"
    return value
