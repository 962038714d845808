"""What a Redis outage is to the Redis store: the errors that mean Redis is away, logged once as it goes and returns."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from redis import exceptions as rx

from gateway.settings import StateFailureMode

log = logging.getLogger("polyroute.state")

# What an unreachable or failing-over Redis raises. Anything else (a script error, a bad reply) is a bug: it propagates.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    rx.ConnectionError,  # refused, reset, authentication, loading, pool exhausted; Sentinel: no master known
    rx.TimeoutError,
    rx.ClusterError,  # cluster or a slot's master down
    rx.RedisClusterException,  # no reachable node, slot not covered
    rx.ReadOnlyError,  # a write reached a replica during a failover
    rx.OutOfMemoryError,  # Redis at maxmemory refuses writes: as good as away for counting
)


class RedisOutage:
    """Whether the last command found Redis away; every failure is counted, the change of state logged once."""

    def __init__(
        self,
        *,
        failure_mode: StateFailureMode,
        on_error: Callable[[str], None],
        location: str,
        secrets: Sequence[str],
    ) -> None:
        self._failure_mode = failure_mode
        self._on_error = on_error
        self._location = location
        self._secrets = tuple(s for s in secrets if s)
        self._down = False
        self._dropped = 0

    def dropped(self, count: int) -> bool:
        """Count usage records lost to this outage (told when Redis returns); True for its first loss."""
        first = not self._dropped
        self._dropped += count
        return first

    def failed(self, op: str, err: Exception) -> None:
        self._on_error(op)
        if self._down:
            return
        self._down = True
        detail = str(err)
        for secret in self._secrets:
            detail = detail.replace(secret, "***")
        consequence = (
            "admitting requests without limits or budgets"
            if self._failure_mode is StateFailureMode.OPEN
            else "rejecting requests that need limits or budgets"
        )
        log.warning(
            "state store %s unreachable (%s: %s): %s, buffering usage, circuit breakers local until it returns",
            self._location,
            type(err).__name__,
            detail,
            consequence,
        )

    def recovered(self) -> None:
        if not self._down:
            return
        self._down = False
        if self._dropped:
            log.error("%d usage records were dropped while the state store was unreachable", self._dropped)
            self._dropped = 0
        log.info("state store %s reachable again", self._location)
