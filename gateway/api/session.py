"""The affinity key of a request: `x-polyroute-session`, `metadata.session_id`, or a hash of the leading messages."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson
from starlette.datastructures import Headers

from gateway.errors import BadRequestError

SESSION_HEADER = "x-polyroute-session"
_SESSION = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces
_LEADING_CHARS = 4096  # of each leading message: enough to tell conversations apart, bounded per request


def session_key(headers: Headers, body: dict[str, Any]) -> str | None:
    """The session a client names: `x-polyroute-session`, else `metadata.session_id`; a bad one is a 400."""
    given = headers.get(SESSION_HEADER)
    param = SESSION_HEADER
    if given is None:
        metadata = body.get("metadata")
        given = metadata.get("session_id") if isinstance(metadata, dict) else None
        param = "metadata.session_id"
    if given is None:
        return None
    if not isinstance(given, str) or not _SESSION.match(given):
        raise BadRequestError("a session id must be 1-128 printable ASCII characters without spaces.", param=param)
    return "s:" + given


def leading_key(messages: list[dict[str, Any]]) -> str:
    """What keeps an unnamed conversation on one replica (its KV cache) or one cloud deployment (its prompt cache).

    The leading messages are the system and developer messages and the first user message: they stay the same on
    every turn of a conversation, so each turn hashes alike. Computed only when a spill-over alias asks for it.
    """
    leading: list[tuple[Any, str]] = []
    for message in messages:  # a non-empty list of objects: parse_request checked it
        leading.append((message.get("role"), _text(message.get("content"))[:_LEADING_CHARS]))
        if message.get("role") == "user" or len(leading) >= 8:
            break
    return "p:" + hashlib.blake2b(orjson.dumps(leading), digest_size=8).hexdigest()


def _text(content: Any) -> str:
    """The text of a message; images are left out (a base64 image would make hashing cost megabytes)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", ""))[:_LEADING_CHARS] for p in content if isinstance(p, dict))
    return ""
