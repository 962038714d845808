"""One multipart/form-data encoder for the relays that send uploads on (a transcription's audio, an image edit's
images), so both escape names the same way.

Written here rather than with a library because the dependencies offer only parsers (python-multipart) or an encoder
tied to a client's stream writer (aiohttp); the format needs no more than this (RFC 7578).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from gateway.providers.base import EditFile


def encode_form(fields: Mapping[str, Any], files: Mapping[str, Sequence[EditFile]]) -> tuple[bytes, str]:
    """`fields` as text parts (a list value: the name once per item, as `timestamp_granularities[]`; a value that is
    not a string: as JSON; None: left out), then `files` (a name with several files is sent as `name[]`); and the
    body's content type, with a random boundary."""
    boundary = "polyroute-" + os.urandom(12).hex()
    parts: list[bytes] = []
    for name, value in fields.items():
        if value is None or name in files:
            continue
        for item in value if isinstance(value, list) else (value,):
            text = item if isinstance(item, str) else orjson.dumps(item).decode()
            parts.append(_part_head(boundary, name) + b"\r\n" + text.encode() + b"\r\n")
    for name, items in files.items():
        field = f"{name}[]" if len(items) > 1 else name
        for item in items:
            head = _part_head(boundary, field, item.filename)
            head += f"content-type: {_header_safe(item.content_type)}\r\n".encode()
            parts.append(head + b"\r\n" + item.data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _part_head(boundary: str, name: str, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{_quoted(name)}"'
    if filename is not None:
        disposition += f'; filename="{_quoted(filename)}"'
    return f"--{boundary}\r\ncontent-disposition: {disposition}\r\n".encode()


def _quoted(value: str) -> str:
    """A name inside a quoted header parameter (RFC 7578 section 4.2: quotes and line breaks percent-encoded)."""
    return _header_safe(value).replace('"', "%22")


def _header_safe(value: str) -> str:
    return value.replace("\r", "%0D").replace("\n", "%0A")
