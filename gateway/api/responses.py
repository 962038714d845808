"""OpenAI-shaped error responses (the envelope itself is built by errors.py)."""

from __future__ import annotations

import orjson
from starlette.responses import Response

from gateway.error_envelope import error_body
from gateway.errors import PolyrouteError


def error_response(err: PolyrouteError, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(error_body(err)),
        status_code=err.status,
        media_type="application/json",
        headers={**(headers or {}), **err.headers()},
    )
