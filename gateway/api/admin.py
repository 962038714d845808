"""Admin endpoints (admin key only): usage report, policy reload, route explain."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.routing import BaseRoute

from gateway.api.asgi_io import read_body
from gateway.api.audio_parsing import explained_request
from gateway.api.openapi import OPENAI_ERROR, error_responses, ref
from gateway.api.openapi_security import admin_only
from gateway.api.parsing import request_facts
from gateway.errors import BadRequestError, NotFoundError, PolicyError, PolicyRejectedError
from gateway.observability.usage_report import MAX_DAYS, dimensions, summarize
from gateway.policy.engine import decide
from gateway.providers.base import Endpoint
from gateway.providers.images import capable_plan
from gateway.runtime import Runtime


class UsageReport(BaseModel):
    """Usage by the requested dimensions over the last `days` days (UTC)."""

    model_config = ConfigDict(extra="allow")
    since: str
    until: str
    group_by: list[str]
    total: dict[str, Any]
    groups: list[dict[str, Any]]
    share_by_vendor: dict[str, dict[str, float]]
    share_by_hosting: dict[str, dict[str, float]]


class Reloaded(BaseModel):
    status: Literal["reloaded"]
    source: str
    aliases: list[str]


class Exclusion(BaseModel):
    deployment: str
    reason: str


class RouteExplanation(BaseModel):
    """The decision the gateway would take for the body, without calling any upstream."""

    route: str
    strategy: str
    attempts: list[str]
    excluded: list[Exclusion]
    applied_rules: list[str]
    estimated_cost_usd: dict[str, float]
    trace: list[str]
    evaluated_at: float


class ExplainedEndpoint(StrEnum):
    """The endpoints a body can be explained for (their bodies are read the same way as the proxied ones)."""

    CHAT = "chat"
    COMPLETION = "completion"
    EMBEDDING = "embedding"
    TRANSCRIPTION = "transcription"  # the body: a JSON object of the upload's text fields (no file)
    SPEECH = "speech"
    IMAGE = "image"  # an images/generations body


EXPLAIN_BODY = {
    "requestBody": {
        "required": True,
        "description": "The body the client would send, for the endpoint named by `endpoint`.",
        "content": {"application/json": {"schema": {"anyOf": [  # api/openapi_models.py
            ref(name) for name in ("ChatCompletionRequest", "CompletionRequest", "EmbeddingRequest", "ImageRequest")
        ]}}},
    }
}
ERRORS = error_responses(OPENAI_ERROR, ("400", "401", "503"))


def admin_routes(runtime: Runtime) -> list[BaseRoute]:
    router = APIRouter(prefix="/admin", tags=["Admin"], dependencies=[Depends(admin_only(runtime))])

    @router.get("/usage", response_model=UsageReport, responses=ERRORS)
    async def usage(
        days: Annotated[int, Query(ge=1, le=MAX_DAYS)] = 1,
        group_by: Annotated[str, Query(description="Comma list of dimensions.")] = "tenant,alias,deployment,vendor",
    ) -> UsageReport:
        """Usage by tenant, alias, deployment and day, from the state store."""
        today = datetime.now(UTC).date()
        since = (today - timedelta(days=days - 1)).isoformat()
        try:
            dims = dimensions(group_by.split(","))
        except ValueError as exc:
            raise BadRequestError(str(exc), param="group_by") from exc
        rows = await runtime.store.usage(since, today.isoformat())  # unreachable store: its 503 envelope
        return UsageReport(**summarize(rows, dims), since=since, until=today.isoformat())

    @router.post("/reload", response_model=Reloaded, responses={
        **error_responses(OPENAI_ERROR, ("401",)),
        "422": {"description": "The policy file is invalid: the running policy stays; the message names each "
                "problem's YAML path.", "content": {"application/json": {"schema": ref(OPENAI_ERROR)}}},
    })
    async def reload() -> Reloaded:
        """Load the policy file again; an invalid one keeps the running policy."""
        try:
            table = await runtime.reload()
        except PolicyError as err:  # the file is invalid: the running policy stays, the caller learns why
            raise PolicyRejectedError(err.problems, err.source) from None
        return Reloaded(status="reloaded", source=table.source, aliases=sorted(table.aliases))

    async def explain(
        request: Request,
        endpoint: ExplainedEndpoint = ExplainedEndpoint.CHAT,
        tenant: Annotated[str | None, Query(description="Explain as this tenant (default: anonymous).")] = None,
    ) -> RouteExplanation:
        """Dry-run a request body (and optional tenant/hints) through the same decision code, no upstream call."""
        raw = await read_body(request.receive, request.headers, runtime.settings.max_body_bytes)
        parsed = explained_request(raw, Endpoint(endpoint.value), request.headers)
        table = runtime.active.table
        caller = table.tenants.get(tenant) if tenant else table.anonymous_tenant()
        if caller is None:
            raise NotFoundError(f"unknown tenant '{tenant}'", param="tenant", code="tenant_not_found")
        plan = decide(request_facts(parsed, caller), table, runtime.health.snapshot(), runtime.load.snapshot())
        if endpoint is ExplainedEndpoint.IMAGE:  # the targets that cannot honour an option are excluded too
            plan = capable_plan(plan, Endpoint.IMAGE, parsed.body)
        return RouteExplanation(
            route=plan.route,
            strategy=plan.strategy,
            attempts=[d.name for d in plan.attempts],
            excluded=[Exclusion(**dataclasses.asdict(e)) for e in plan.excluded],
            applied_rules=list(plan.applied_rules),
            estimated_cost_usd=plan.estimated_cost_usd,
            trace=list(plan.trace),
            evaluated_at=time.time(),
        )

    explained = {**error_responses(OPENAI_ERROR, ("400", "401", "404", "413"))}
    router.add_api_route("/routes/explain", explain, methods=["POST"], response_model=RouteExplanation,
                         responses=explained, openapi_extra=EXPLAIN_BODY, operation_id="explain_route")
    router.add_api_route("/routes/explain", explain, methods=["GET"], response_model=RouteExplanation,
                         responses=explained, operation_id="explain_route_get", include_in_schema=False)
    return list(router.routes)
