"""OpenAI-shaped error responses and polyroute's response headers."""

from __future__ import annotations

import orjson
from starlette.responses import Response

from gateway.errors import PolyrouteError, error_body
from gateway.routing.executor import Outcome

DONE_EVENT = b"data: [DONE]\n\n"


def error_response(err: PolyrouteError, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(error_body(err)),
        status_code=err.status,
        media_type="application/json",
        headers={**(headers or {}), **err.headers()},
    )


def route_headers(request_id: str, route: str, outcome: Outcome) -> dict[str, str]:
    headers = {
        "x-request-id": request_id,
        "x-polyroute-route": route,
        "x-polyroute-attempts": str(outcome.attempts),
    }
    if outcome.deployment is not None:
        headers["x-polyroute-deployment"] = outcome.deployment.name
    if outcome.fallback_reason is not None and outcome.attempts > 1:
        headers["x-polyroute-fallback-reason"] = outcome.fallback_reason
    return headers
