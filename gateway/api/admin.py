"""Admin endpoints (admin key only): usage report, policy reload, route explain."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.asgi_io import read_body
from gateway.api.auth import is_admin
from gateway.api.parsing import parse_request, request_facts
from gateway.api.responses import error_response
from gateway.errors import AuthenticationError, BadRequestError, NotFoundError, PolicyError, PolyrouteError
from gateway.observability.usage_report import MAX_DAYS, dimensions, summarize
from gateway.policy.engine import decide
from gateway.providers.base import Endpoint
from gateway.runtime import Runtime


def admin_routes(runtime: Runtime) -> list[Route]:
    def check(request: Request) -> None:
        if not is_admin(request.headers, runtime.settings.admin_key):
            raise AuthenticationError(
                "Admin endpoints need 'Authorization: Bearer <POLYROUTE_ADMIN_KEY>'"
                + ("" if runtime.settings.admin_key else " (no admin key is configured on this gateway)")
            )

    async def usage(request: Request) -> Response:
        try:
            check(request)
            days = int(request.query_params.get("days", "1"))
            if not 1 <= days <= MAX_DAYS:
                raise BadRequestError(f"'days' must be between 1 and {MAX_DAYS}.", param="days")
            group = request.query_params.get("group_by", "tenant,alias,deployment,vendor")
        except ValueError:
            return error_response(BadRequestError("'days' must be an integer.", param="days"))
        except PolyrouteError as err:
            return error_response(err)
        today = datetime.now(UTC).date()
        since = (today - timedelta(days=days - 1)).isoformat()
        try:
            dims = dimensions(group.split(","))
        except ValueError as exc:
            return error_response(BadRequestError(str(exc), param="group_by"))
        try:
            rows = await runtime.store.usage(since, today.isoformat())
        except PolyrouteError as err:  # the shared store is unreachable: 503, not an internal error
            return error_response(err)
        report = summarize(rows, dims)
        report["since"], report["until"] = since, today.isoformat()
        return Response(orjson.dumps(report), media_type="application/json")

    async def reload(request: Request) -> Response:
        try:
            check(request)
            table = await runtime.reload()
        except PolicyError as err:  # the file is invalid: the running policy stays, the caller learns why
            err.status = 422
            return error_response(err)
        except PolyrouteError as err:
            return error_response(err)
        body = {"status": "reloaded", "source": table.source, "aliases": sorted(table.aliases)}
        return Response(orjson.dumps(body), media_type="application/json")

    async def explain(request: Request) -> Response:
        """Dry-run a request body (and optional tenant/hints) through the same decision code, no upstream call."""
        try:
            check(request)
            raw = await read_body(request.receive, request.headers, runtime.settings.max_body_bytes)
            endpoint = Endpoint(request.query_params.get("endpoint", "chat"))
            parsed = parse_request(raw, endpoint, request.headers)
            table = runtime.active.table
            tenant_name = request.query_params.get("tenant")
            tenant = table.tenants.get(tenant_name) if tenant_name else table.anonymous_tenant()
            if tenant is None:
                raise NotFoundError(f"unknown tenant '{tenant_name}'", param="tenant", code="tenant_not_found")
            facts = request_facts(parsed, tenant)
            plan = decide(facts, table, runtime.health.snapshot(), runtime.load.snapshot())
        except ValueError:
            return error_response(BadRequestError("'endpoint' must be chat, completion or embedding."))
        except PolyrouteError as err:
            return error_response(err)
        body = {
            "route": plan.route,
            "strategy": plan.strategy,
            "attempts": [d.name for d in plan.attempts],
            "excluded": [dataclasses.asdict(e) for e in plan.excluded],
            "applied_rules": list(plan.applied_rules),
            "estimated_cost_usd": plan.estimated_cost_usd,
            "trace": list(plan.trace),
            "evaluated_at": time.time(),
        }
        return Response(orjson.dumps(body), media_type="application/json")

    return [
        Route("/admin/usage", usage, methods=["GET"]),
        Route("/admin/reload", reload, methods=["POST"]),
        Route("/admin/routes/explain", explain, methods=["GET", "POST"]),
    ]
