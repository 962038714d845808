"""Reading an Images request: the JSON of a generation and the multipart body of an edit."""

from __future__ import annotations

import asyncio

import pytest
from starlette.datastructures import Headers

from gateway.api.image_request import parse_edit, parse_generation
from gateway.errors import BadRequestError
from gateway.providers.base import Endpoint

JSON = Headers({"content-type": "application/json"})
BOUNDARY = "b0undary"
MULTIPART = Headers({"content-type": f"multipart/form-data; boundary={BOUNDARY}"})


def form(*parts: tuple[str, bytes, str | None]) -> bytes:
    out = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        kind = "content-type: image/png\r\n" if filename else ""
        out += f"--{BOUNDARY}\r\ncontent-disposition: {disposition}\r\n{kind}\r\n".encode() + value + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def test_a_generation_reads_count_and_variant_and_keeps_extras() -> None:
    raw = b'{"model": "paint", "prompt": "a fox", "n": 3, "size": "1024x1024", "quality": "HD", "seed": 1}'
    with pytest.raises(BadRequestError) as caught:  # OpenAI's enum is lower case
        parse_generation(raw, Endpoint.IMAGE, JSON)
    assert caught.value.param == "quality"
    parsed = parse_generation(raw.replace(b"HD", b"hd"), Endpoint.IMAGE, JSON)
    assert (parsed.images, parsed.image_variant, parsed.prompt_tokens, parsed.max_output_tokens) == (
        3, "1024x1024/hd", 0, 0)
    assert parsed.body["seed"] == 1 and not parsed.stream


def test_routing_hints_are_read_and_not_forwarded() -> None:
    raw = b'{"model": "paint", "prompt": "x", "metadata": {"data_class": "pii"}}'
    parsed = parse_generation(raw, Endpoint.IMAGE, JSON)
    assert parsed.data_class == "pii" and "metadata" not in parsed.body


def test_an_edit_reads_fields_and_files() -> None:
    raw = form(("model", b"edit", None), ("prompt", b"blue", None), ("n", b"2", None),
               ("image[]", b"PNG-1", "a.png"), ("image[]", b"PNG-2", "b.png"), ("mask", b"MASK", "m.png"))
    parsed = asyncio.run(parse_edit(raw, MULTIPART))
    assert parsed.endpoint is Endpoint.IMAGE_EDIT and parsed.model == "edit" and parsed.images == 2
    assert [(f.filename, f.data, f.content_type) for f in parsed.body["image"]] == [
        ("a.png", b"PNG-1", "image/png"), ("b.png", b"PNG-2", "image/png")]
    assert parsed.body["mask"].data == b"MASK"


@pytest.mark.parametrize(("headers", "raw", "param", "words"), [
    (JSON, b"{}", None, "multipart/form-data"),
    (Headers({"content-type": "multipart/form-data"}), b"x", None, "Missing boundary"),
    (MULTIPART, form(("model", b"edit", None), ("prompt", b"x", None)), "image", "'image'"),
    (MULTIPART, form(("model", b"edit", None), ("prompt", b"x", None), ("n", b"two", None),
                     ("image", b"P", "a.png")), "n", "integer"),
    (MULTIPART, form(("model", b"edit", None), ("prompt", b"x", None), ("other", b"P", "a.png")), "other", "file"),
])
def test_a_bad_edit_is_a_400(headers: Headers, raw: bytes, param: str | None, words: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        asyncio.run(parse_edit(raw, headers))
    assert caught.value.param == param and words in caught.value.message
