"""OpenAI's error envelope of a PolyrouteError: the JSON body of an error answer and the SSE event ending a stream."""

from __future__ import annotations

import orjson

from gateway.errors import PolyrouteError


def error_body(err: PolyrouteError) -> dict[str, dict[str, str | None]]:
    """OpenAI's error envelope."""
    return {"error": {"message": err.message, "type": err.error_type, "param": err.param, "code": err.code}}


def error_event(err: PolyrouteError) -> bytes:
    """The one SSE event that ends a stream whose upstream failed after the first byte."""
    return b"data: " + orjson.dumps(error_body(err)) + b"\n\n"
