"""Label values of the metrics: the bounded sets, the clamp that records any other value as "other", their series."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from prometheus_client import Counter, Gauge, Histogram

from gateway.error_classes import ErrorClass

OTHER: Final = "other"
"""Label value recorded for anything outside the known, bounded set (unknown alias, bad key, new error class)."""
NONE: Final = "none"
"""Label value for "not applicable", e.g. the deployment of a request that never reached an upstream."""

UPSTREAM_ERROR_CLASSES: Final = frozenset(c.value for c in ErrorClass)
UPSTREAM_OUTCOMES: Final = UPSTREAM_ERROR_CLASSES | {"success"}
RATE_LIMIT_REASONS: Final = frozenset(
    {"tenant_rpm", "tenant_tpm", "budget_day", "budget_month", "deployments_saturated", OTHER}
)
BUDGET_PERIODS: Final = frozenset({"day", "month"})
POLICY_RELOAD_RESULTS: Final = frozenset({"success", "error"})
STATE_STORE_OPS: Final = frozenset({"admit", "settle", "circuit", "usage", "ping", OTHER})
HOSTINGS: Final = frozenset({"cloud", "self_hosted", NONE})
LOCKIN_SHARE_BY: Final = frozenset({"requests", "tokens", "spend"})
CURRENCIES: Final = frozenset({"USD", "CNY", "EUR"})
SHADOW_RESULTS: Final = frozenset({"compared", "dropped_budget", "dropped_concurrency", "excluded", "error"})

_STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx")


def bounded(allowed: Iterable[str]) -> Mapping[str, str]:
    # A mapping to plain str: a str-valued Enum member finds its entry, but its str() would be "Class.MEMBER".
    return {str.__str__(v): str.__str__(v) for v in (*allowed, NONE, OTHER)}


def clamp(value: str, allowed: Mapping[str, str]) -> str:
    return allowed.get(value, OTHER)


_INITIAL: Final = bounded(())


@dataclass(frozen=True, slots=True)
class KnownLabels:
    """Label values allowed as themselves; swapped as a whole so readers never see a half-updated set."""

    aliases: Mapping[str, str] = field(default_factory=lambda: _INITIAL)
    deployments: Mapping[str, str] = field(default_factory=lambda: _INITIAL)
    providers: Mapping[str, str] = field(default_factory=lambda: _INITIAL)
    vendors: Mapping[str, str] = field(default_factory=lambda: _INITIAL)
    tenants: Mapping[str, str] = field(default_factory=lambda: _INITIAL)


def status_class(status: int) -> str:
    index = status // 100 - 1
    return _STATUS_CLASSES[index] if 0 <= index < len(_STATUS_CLASSES) else OTHER


def flag_label(value: bool) -> str:
    return "true" if value else "false"


_M = TypeVar("_M", Counter, Gauge, Histogram)


class Children(Generic[_M]):
    """The labelled series of one metric, found by one dict lookup instead of a validated labels() call."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: _M) -> None:
        self._metric: _M = metric
        self._children: dict[tuple[str, ...], _M] = {}

    def remove(self, *label_values: str) -> None:
        """Drop a series (no-op when it does not exist)."""
        if self._children.pop(label_values, None) is not None:
            self._metric.remove(*label_values)

    def __call__(self, *label_values: str) -> _M:
        child = self._children.get(label_values)
        if child is None:  # bounded: every label value has been clamped to a known set
            child = self._children[label_values] = self._metric.labels(*label_values)
        return child
