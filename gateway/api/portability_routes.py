"""Portability admin endpoints (admin key only): GET /admin/lockin, /admin/drill, /admin/recorded, /admin/shadow."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict
from starlette.routing import BaseRoute

from gateway.api.openapi import OPENAI_ERROR, error_responses
from gateway.api.openapi_security import admin_only
from gateway.errors import BadRequestError, PolyrouteError
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
from gateway.state.facts import FACT_RETENTION_DAYS


class _Report(BaseModel):
    """A report as `polyroute lockin | drill | shadow report --json` prints it (README, "Leaving a vendor")."""

    model_config = ConfigDict(extra="allow")


class LockinReport(_Report):
    """Shares and concentration by vendor, jurisdiction and hosting; per alias its portability and stranded share."""


class DrillReport(_Report):
    """What the recorded traffic would do without one vendor: refusals by rule, new targets, cost and latency."""


class RecordedUsage(_Report):
    """The recorded usage rows and routing facts that `polyroute what-if --url` prices under another policy."""


class ShadowReport(_Report):
    """Shadow evaluation's results in this gateway process, per alias and shadow target."""


ERRORS = error_responses(OPENAI_ERROR, ("400", "401", "503"))
Days = Annotated[int, Query(description=f"UTC days back, today included (1 to {FACT_RETENTION_DAYS}).")]


def portability_routes(runtime: Runtime) -> list[BaseRoute]:
    """The routes, and the lock-in gauges' refresh and the parameters usage records note, handed to accounting."""
    runtime.accountant.watch_params(vendor_params())
    gauges = LockinGauges(runtime.store, lambda: runtime.active.table, runtime.metrics)
    runtime.accountant.every(runtime.settings.lockin_refresh_seconds, gauges)
    runtime.accountant.every(RETIREMENT_REFRESH_S, RetirementGauge(lambda: runtime.active.table, runtime.metrics))
    router = APIRouter(prefix="/admin", tags=["Admin"], dependencies=[Depends(admin_only(runtime))])

    @router.get("/lockin", response_model=LockinReport, responses=ERRORS)
    async def lockin(days: Days = 7) -> dict[str, Any]:
        """The lock-in report over the recorded traffic (an unreachable shared store is a 503)."""
        proven = runtime.shadow.results.proven()
        return await lockin_from_store(runtime.store, runtime.active.table, _days(days), proven)

    @router.get("/drill", response_model=DrillReport, responses=ERRORS)
    async def drill(
        without: Annotated[str, Query(description="The vendor to remove from every alias.")] = "",
        days: Days = 7,
        max_stranded: Annotated[float, Query(description="The share a critical alias may lose (0 to 1).")] = 0.0,
    ) -> dict[str, Any]:
        """Replay the recorded routing facts with one vendor's deployments removed."""
        checked = _days(days)
        if not without:
            raise BadRequestError("'without' must name a vendor of the policy.", param="without")
        try:
            check_share(max_stranded)
        except PolyrouteError:
            raise BadRequestError("'max_stranded' must be a fraction between 0 and 1.", param="max_stranded") from None
        table = runtime.active.table
        vendors = sorted({p.vendor for p in table.providers.values()})
        if without not in vendors:
            raise BadRequestError(
                f"no provider in the policy has vendor '{without}'; its vendors are {vendors}", param="without"
            )
        return await drill_from_store(runtime.store, table, checked, without, max_stranded)

    @router.get("/recorded", response_model=RecordedUsage, responses=ERRORS)
    async def recorded(days: Days = 7) -> dict[str, Any]:
        """The recorded usage rows and routing facts that `polyroute what-if --url` prices under another policy."""
        return await recorded_from_store(runtime.store, _days(days))

    @router.get("/shadow", response_model=ShadowReport, responses=ERRORS)
    async def shadow(
        alias: Annotated[str | None, Query(description="Only this alias's shadow targets.")] = None,
    ) -> dict[str, Any]:
        """Shadow evaluation's results in this gateway process (`polyroute shadow report --url` prints them)."""
        if alias is not None and alias not in runtime.active.table.aliases:
            raise BadRequestError(f"'{alias}' is not an alias of the policy.", param="alias")
        return runtime.shadow.results.report(alias)

    return list(router.routes)


def _days(days: int) -> int:
    try:
        check_days(days)
    except PolyrouteError as err:
        raise BadRequestError(err.message, param="days") from None
    return days
