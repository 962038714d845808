"""Model retirement: days until each deployment's `retires_on`, and what `polyroute policy check` says about it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from gateway.policy.table import PolicyTable

WARN_DAYS = 30  # `policy check` warns this many days ahead of a retirement


@dataclass(frozen=True)
class RetirementNote:
    """One deployment near or past its retirement date; `failed` when the date has passed."""

    deployment: str
    message: str
    failed: bool


def days_to_retirement(table: PolicyTable, today: date) -> dict[str, int]:
    """Days left for every deployment with a `retires_on` (0 on the day, negative after it)."""
    return {
        name: (d.retires_on - today).days for name, d in table.deployments.items() if d.retires_on is not None
    }


def retirement_notes(table: PolicyTable, today: date) -> list[RetirementNote]:
    """A warning for each deployment retiring within WARN_DAYS, a failure for each one whose date has come."""
    notes: list[RetirementNote] = []
    for name, left in sorted(days_to_retirement(table, today).items()):
        deployment = table.deployments[name]
        assert deployment.retires_on is not None
        instead = f"; move its traffic to {deployment.replaced_by!r}" if deployment.replaced_by else ""
        where = f"deployments.{name}: {deployment.model}"
        when = deployment.retires_on.isoformat()
        if left <= 0:
            notes.append(RetirementNote(name, f"{where} retired on {when}{instead}", True))
        elif left <= WARN_DAYS:
            notes.append(RetirementNote(name, f"{where} retires on {when} ({left} days){instead}", False))
    return notes
