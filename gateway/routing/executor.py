"""Carries out a RoutePlan: attempts in order, retries with backoff, fallback by error class, circuit breakers."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from gateway.error_classes import REQUEST_FAULTS, RETRYABLE, AttemptFailure, ErrorClass
from gateway.errors import (
    AllTargetsFailedError,
    UpstreamError,
    UpstreamRejectedError,
    UpstreamRejectedTooLargeError,
    UpstreamRejectedUnprocessableError,
)
from gateway.policy.plan import RoutePlan
from gateway.policy.table import Deployment, FallbackPolicy
from gateway.routing.health import HealthTracker
from gateway.state.base import DeploymentQuota, StateStore, seconds_to_next_window

T = TypeVar("T")
# A refusal keeps the upstream's status when it names one a client understands (too large, unprocessable).
_REJECTED_AS: dict[int | None, type[UpstreamRejectedError]] = {
    413: UpstreamRejectedTooLargeError,
    422: UpstreamRejectedUnprocessableError,
}


@dataclass
class Outcome:
    """What happened while carrying out a plan; becomes response headers, metrics and the usage record."""

    deployment: Deployment | None = None  # the one that answered
    last_tried: Deployment | None = None  # the last one attempted, answered or not: a failure is recorded there
    attempts: int = 0
    fallback_reason: str | None = None
    failures: list[AttemptFailure] = field(default_factory=list)
    first_token_s: float | None = None


class AttemptObserver:
    """Receives one call per upstream attempt and per fallback (metrics); no-op by default."""

    def attempt(self, deployment: Deployment, outcome: str) -> None:
        """`outcome` is "success" or an ErrorClass value."""

    def fallback(self, from_deployment: str, to_deployment: str, reason: str) -> None:
        """Traffic moved on from one deployment to another."""


class Executor:
    """Walks a plan's attempts; rounds of retries re-walk the deployments that failed retryably."""

    def __init__(
        self,
        store: StateStore,
        health: HealthTracker,
        observer: AttemptObserver,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._health = health
        self._observer = observer
        self._sleep = sleep

    async def run(
        self,
        plan: RoutePlan,
        fallback: FallbackPolicy,
        attempt: Callable[[Deployment], Awaitable[T]],
        *,
        reserved: str | None,
        tokens: int,
        outcome: Outcome,
        saturated: frozenset[str] = frozenset(),
    ) -> T:
        """Return the first successful attempt's result; raise AllTargetsFailedError or UpstreamRejectedError.

        `reserved` is the deployment admission already counted; `saturated` are those admission found at their
        own rpm/tpm limit, skipped here without asking the store again.
        """
        candidates = list(plan.attempts)
        retries = fallback.retries
        larger_than: int | None = None  # after a context-window failure, only larger windows may follow
        previous: Deployment | None = None
        for round_no in range(retries.attempts + 1):
            again: list[Deployment] = []
            waits: list[float] = []
            for deployment in candidates:
                name = deployment.name
                if larger_than is not None and (deployment.context_window or 0) <= larger_than:
                    outcome.failures.append(
                        AttemptFailure(
                            name, ErrorClass.CONTEXT_WINDOW, "skipped: context window is not larger", skipped=True,
                            context_window=deployment.context_window,
                        )
                    )
                    continue
                if not await self._health.admit_attempt(name):
                    frees_in = max(0.0, self._health.circuit(name).open_until - time.time())
                    outcome.failures.append(
                        AttemptFailure(name, ErrorClass.SERVER_ERROR, "skipped: circuit breaker is open", skipped=True,
                                       retry_after=frees_in)
                    )
                    continue
                if name in saturated:
                    outcome.failures.append(_saturated(name))
                    continue
                if name == reserved:
                    reserved = None
                elif (deployment.rpm or deployment.tpm) and not await self._store.reserve_deployment(
                    DeploymentQuota(name, deployment.rpm, deployment.tpm), tokens, time.time()
                ):
                    outcome.failures.append(_saturated(name))
                    continue
                if previous is not None and previous.name != name and outcome.fallback_reason:
                    self._observer.fallback(previous.name, name, outcome.fallback_reason)
                previous = outcome.last_tried = deployment
                outcome.attempts += 1
                started = time.perf_counter()
                self._health.begin(name)
                try:
                    result = await attempt(deployment)
                except UpstreamError as err:
                    self._health.end(name)
                    self._observer.attempt(deployment, err.error_class.value)
                    await self._health.failed(name, err.error_class)
                    window = deployment.context_window if err.error_class is ErrorClass.CONTEXT_WINDOW else None
                    outcome.failures.append(
                        AttemptFailure(name, err.error_class, err.message, err.upstream_status,
                                       retry_after=err.retry_after, context_window=window)
                    )
                    if err.error_class not in fallback.on:
                        raise self._final_error(err, outcome, window) from err
                    outcome.fallback_reason = err.error_class.value
                    if err.error_class is ErrorClass.CONTEXT_WINDOW:
                        larger_than = max(larger_than or 0, deployment.context_window or 0)
                    if err.error_class in RETRYABLE and (
                        err.retry_after is None or err.retry_after <= retries.max_backoff_s
                    ):
                        again.append(deployment)
                        waits.append(err.retry_after or 0.0)
                    continue
                except BaseException:
                    self._health.end(name)
                    raise
                self._health.end(name)
                self._observer.attempt(deployment, "success")
                await self._health.succeeded(name, time.perf_counter() - started)
                outcome.deployment = deployment
                return result
            if not again or round_no == retries.attempts:
                break
            candidates = again
            await self._sleep(backoff_delay(round_no, retries.backoff_s, retries.max_backoff_s, max(waits)))
        raise AllTargetsFailedError(outcome.failures)

    @staticmethod
    def _final_error(err: UpstreamError, outcome: Outcome, context_window: int | None) -> Exception:
        if err.error_class in REQUEST_FAULTS:  # the request's own fault: returned unless the policy falls back
            rejected = _REJECTED_AS.get(err.upstream_status, UpstreamRejectedError)
            return rejected(
                f"the upstream rejected the request: {err.message}",
                error_class=err.error_class,
                context_window=context_window,
            )
        return AllTargetsFailedError(outcome.failures)


def _saturated(name: str) -> AttemptFailure:
    """A deployment at its own per-minute limit has room again at the latest when its sliding window has moved on."""
    return AttemptFailure(
        name, ErrorClass.RATE_LIMIT, "skipped: deployment at its own rpm/tpm limit", skipped=True,
        retry_after=seconds_to_next_window(time.time()),
    )


def backoff_delay(round_no: int, base_s: float, cap_s: float, retry_after_s: float) -> float:
    """Exponential backoff with full jitter, never shorter than what the upstream asked for, never past the cap."""
    exp = min(cap_s, base_s * (2**round_no))
    return min(cap_s, max(retry_after_s, random.uniform(exp / 2, exp)))
