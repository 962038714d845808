"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.runtime import Runtime
from gateway.settings import StateFailureMode


def health_routes(runtime: Runtime, *, with_metrics: bool) -> list[Route]:
    async def healthz(_: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def readyz(_: Request) -> Response:
        """Ready when a policy is loaded and the store answers, or its outage is covered by failure mode open."""
        reachable = await runtime.store.ping()
        mode = runtime.settings.state_failure_mode
        ready = reachable or mode is StateFailureMode.OPEN
        body = {
            "status": "ready" if ready else "not_ready",
            "policy": runtime.active.table.source,
            "state_store": "ok" if reachable else f"unreachable (failure mode {mode.value})",
            "degraded": not reachable,
        }
        return Response(orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json")

    async def metrics(_: Request) -> Response:
        payload, content_type = runtime.metrics.render()
        return Response(payload, media_type=content_type)

    routes = [Route("/healthz", healthz), Route("/readyz", readyz)]
    if with_metrics:
        routes.append(Route("/metrics", metrics))
    return routes
