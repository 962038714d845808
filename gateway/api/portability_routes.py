"""Portability admin endpoints (admin key only): GET /admin/lockin, /admin/drill, /admin/recorded, /admin/shadow."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.auth import is_admin
from gateway.api.responses import error_response
from gateway.errors import AuthenticationError, BadRequestError, PolyrouteError
from gateway.portability.commands import (
    check_days,
    check_share,
    drill_from_store,
    lockin_from_store,
    recorded_from_store,
)
from gateway.portability.gauges import RETIREMENT_REFRESH_S, LockinGauges, RetirementGauge
from gateway.portability.vendor_params import vendor_params
from gateway.runtime import Runtime


def portability_routes(runtime: Runtime) -> list[Route]:
    """The routes, and the lock-in gauges' refresh and the parameters usage records note, handed to accounting."""
    runtime.accountant.watch_params(vendor_params())
    gauges = LockinGauges(runtime.store, lambda: runtime.active.table, runtime.metrics)
    runtime.accountant.every(runtime.settings.lockin_refresh_seconds, gauges)
    runtime.accountant.every(RETIREMENT_REFRESH_S, RetirementGauge(lambda: runtime.active.table, runtime.metrics))

    def authorize(request: Request) -> None:
        """The admin key, as every admin route."""
        if not is_admin(request.headers, runtime.settings.admin_key):
            raise AuthenticationError(
                "Admin endpoints need 'Authorization: Bearer <POLYROUTE_ADMIN_KEY>'"
                + ("" if runtime.settings.admin_key else " (no admin key is configured on this gateway)")
            )

    def check(request: Request) -> int:
        """The admin key, then `days`."""
        authorize(request)
        try:
            days = int(request.query_params.get("days", "7"))
            check_days(days)
        except ValueError:
            raise BadRequestError("'days' must be an integer.", param="days") from None
        except PolyrouteError as err:
            raise BadRequestError(err.message, param="days") from None
        return days

    async def lockin(request: Request) -> Response:
        try:
            days = check(request)
            proven = runtime.shadow.results.proven()
            report = await lockin_from_store(runtime.store, runtime.active.table, days, proven)
        except PolyrouteError as err:  # includes an unreachable shared store: 503
            return error_response(err)
        return Response(orjson.dumps(report), media_type="application/json")

    async def drill(request: Request) -> Response:
        try:
            days = check(request)
            without = request.query_params.get("without", "")
            if not without:
                raise BadRequestError("'without' must name a vendor of the policy.", param="without")
            try:
                max_stranded = float(request.query_params.get("max_stranded", "0"))
                check_share(max_stranded)
            except (ValueError, PolyrouteError):
                message = "'max_stranded' must be a fraction between 0 and 1."
                raise BadRequestError(message, param="max_stranded") from None
            table = runtime.active.table
            if without not in {p.vendor for p in table.providers.values()}:
                raise BadRequestError(
                    f"no provider in the policy has vendor '{without}'; its vendors are "
                    f"{sorted({p.vendor for p in table.providers.values()})}",
                    param="without",
                )
            report = await drill_from_store(runtime.store, table, days, without, max_stranded)
        except PolyrouteError as err:
            return error_response(err)
        return Response(orjson.dumps(report), media_type="application/json")

    async def recorded(request: Request) -> Response:
        """The recorded usage rows and routing facts that `polyroute what-if --url` prices under another policy."""
        try:
            report = await recorded_from_store(runtime.store, check(request))
        except PolyrouteError as err:
            return error_response(err)
        return Response(orjson.dumps(report), media_type="application/json")

    async def shadow(request: Request) -> Response:
        """Shadow evaluation's results in this gateway process (`polyroute shadow report --url` prints them)."""
        try:
            authorize(request)
            alias = request.query_params.get("alias") or None
            if alias is not None and alias not in runtime.active.table.aliases:
                raise BadRequestError(f"'{alias}' is not an alias of the policy.", param="alias")
        except PolyrouteError as err:
            return error_response(err)
        return Response(orjson.dumps(runtime.shadow.results.report(alias)), media_type="application/json")

    return [
        Route("/admin/lockin", lockin, methods=["GET"]),
        Route("/admin/shadow", shadow, methods=["GET"]),
        Route("/admin/drill", drill, methods=["GET"]),
        Route("/admin/recorded", recorded, methods=["GET"]),
    ]
