"""Decide with the load snapshot: a saturated tier's request waits (bounded) for room, and affinity is counted."""

from __future__ import annotations

from gateway.errors import TierSaturatedError
from gateway.load.tracker import LoadTracker, SentMark
from gateway.observability.metrics import Metrics
from gateway.policy.engine import decide
from gateway.policy.plan import HealthSnapshot, RequestFacts, RoutePlan
from gateway.policy.table import PolicyTable, Strategy

SPILLOVER = Strategy.SPILLOVER.value


async def place(
    facts: RequestFacts, table: PolicyTable, health: HealthSnapshot, load: LoadTracker, metrics: Metrics
) -> tuple[RoutePlan, SentMark | None]:
    """The engine's plan; with `on_saturation: queue`, wait up to the alias's `max_wait` for its tier to drain and
    decide again (503 with Retry-After if it does not). Only spill-over aliases ever wait or count affinity. With the
    plan: the mark of a request counted as sent to its engine, for `LoadTracker.done` when the request ends."""
    try:
        plan = decide(facts, table, health, load.snapshot())
    except TierSaturatedError as err:
        if not await load.wait_for_room(err.alias, err.tier, err.max_wait_s):
            raise
        plan = decide(facts, table, health, load.snapshot())
    sent = None
    if plan.strategy == SPILLOVER and plan.attempts:
        # Counted before any await: the next request placed before the engine is read again sees this one.
        sent = load.placed(plan.attempts[0].name)
    if plan.affinity_hit is not None:
        metrics.affinity(alias=plan.alias, hit=plan.affinity_hit)
    return plan, sent
