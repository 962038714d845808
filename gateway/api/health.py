"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from gateway.runtime import Runtime
from gateway.settings import StateFailureMode


class Alive(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    policy: str
    state_store: str
    degraded: bool


ALIVE = b'{"status":"ok"}'
PROMETHEUS_TEXT: dict[int | str, dict[str, Any]] = {
    200: {"description": "Prometheus text exposition.", "content": {"text/plain": {}}}
}


def health_routes(runtime: Runtime, *, with_metrics: bool) -> list[BaseRoute]:
    router = APIRouter(tags=["Health"])

    @router.get("/healthz", response_model=Alive)
    async def healthz() -> Response:
        """The process is alive."""
        return Response(ALIVE, media_type="application/json")

    @router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
    async def readyz(response: Response) -> Readiness:
        """Ready when a policy is loaded and the store answers, or its outage is covered by failure mode open."""
        reachable = await runtime.store.ping()
        mode = runtime.settings.state_failure_mode
        ready = reachable or mode is StateFailureMode.OPEN
        response.status_code = 200 if ready else 503
        return Readiness(
            status="ready" if ready else "not_ready",
            policy=runtime.active.table.source,
            state_store="ok" if reachable else f"unreachable (failure mode {mode.value})",
            degraded=not reachable,
        )

    if with_metrics:

        @router.get("/metrics", response_class=Response, responses=PROMETHEUS_TEXT)
        async def metrics(_: Request) -> Response:
            """polyroute's metrics (see the README for each name)."""
            payload, content_type = runtime.metrics.render()
            return Response(payload, media_type=content_type)

    return list(router.routes)
