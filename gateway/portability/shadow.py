"""Shadow evaluation: copies of sampled requests sent to other deployments in the background, then compared.

A copy starts once the primary request has finished (its attempt was chosen and its answer is known); it never
goes through the client's admission, limits or budget, nor through the executor's retries and circuit breakers:
each alias has its own daily budget and concurrency cap for its copies, and a copy over either is dropped and
counted. A copy only goes to a target the request's rules allow, judged by the routing engine's own functions.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import PolyrouteError, UpstreamError
from gateway.observability.accounting import estimated_usage, output_tokens_in_body, request_cost
from gateway.observability.metrics import Metrics
from gateway.policy.engine import exclusion_reason, matches
from gateway.policy.plan import HealthSnapshot, RequestFacts
from gateway.policy.strategies import estimated_cost
from gateway.policy.table import Alias, Deployment, PolicyTable, Shadow
from gateway.portability.shadow_compare import Answer, answer_of_body, answer_of_stream, compare
from gateway.portability.shadow_record import PairRecorder
from gateway.portability.shadow_results import ShadowResults
from gateway.providers.base import Endpoint, UpstreamCall, Usage

if TYPE_CHECKING:
    from gateway.routing.proxied import ProxiedRequest

_NO_HEALTH = HealthSnapshot()
SHADOWED_ENDPOINTS = frozenset({Endpoint.CHAT, Endpoint.COMPLETION})


def shadow_exclusion(deployment: Deployment, facts: RequestFacts, table: PolicyTable) -> str | None:
    """Why the request's rules keep a copy from `deployment` (the engine's own reason), None when they allow it."""
    applied = [rule for rule in table.rules if matches(rule.when, facts)]
    return exclusion_reason(deployment, facts, applied, _NO_HEALTH)


def shadow_body(body: dict[str, Any], deployment: Deployment) -> dict[str, Any]:
    """The copy's body: the client's, for the shadow deployment's model, as a non-stream request."""
    copy = {k: v for k, v in body.items() if k != "stream_options"}
    copy["model"] = deployment.model
    copy["stream"] = False
    return copy


class ShadowEvaluator:
    """One per gateway process: samples requests, starts and bounds their copies, keeps the results."""

    def __init__(self, metrics: Metrics, *, draw: Callable[[], float] = random.random) -> None:
        self.results = ShadowResults()
        self._metrics = metrics
        self._draw = draw
        self._inflight: dict[str, int] = {}
        self._spent: dict[str, tuple[str, float]] = {}  # alias -> (UTC day, USD reserved and settled that day)
        self._tasks: set[asyncio.Task[None]] = set()
        self._recorders: dict[str, PairRecorder] = {}

    def sampled(self, alias: Alias | None, endpoint: Endpoint) -> bool:
        """Decided once when a request is admitted, so that an unsampled request pays nothing more."""
        shadow = alias.shadow if alias is not None else None
        return shadow is not None and endpoint in SHADOWED_ENDPOINTS and self._draw() < shadow.sample

    def primary_finished(
        self, request: ProxiedRequest, status: int, usage: Usage | None, cost_usd: float, duration_s: float,
        first_token_s: float | None,
    ) -> None:
        """Start the copies of a sampled request that has finished; returns at once."""
        table, facts = request.table, request.facts
        shadow = table.aliases[request.plan.alias].shadow
        if shadow is None or facts is None or status == 499:  # 499: the client left, nothing to compare with
            return
        answered = request.outcome.deployment
        primary = _Primary(request, status, usage, cost_usd, duration_s, first_token_s)
        for target in shadow.targets:
            deployment = table.deployments[target]
            if answered is not None and deployment.name == answered.name:
                continue  # the primary itself: nothing to compare
            result = self._admit(request.plan.alias, shadow, deployment, facts, table)
            if isinstance(result, str):
                self.results.pair(request.plan.alias, target).results[result] += 1
                self._metrics.shadow(alias=request.plan.alias, target=target, result=result)
                continue
            task = asyncio.create_task(self._copy(primary, shadow, deployment, result), name="polyroute-shadow")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _admit(
        self, alias: str, shadow: Shadow, deployment: Deployment, facts: RequestFacts, table: PolicyTable
    ) -> str | float:
        """The copy's estimated cost, reserved against the alias's shadow budget; or why it is not sent."""
        if shadow_exclusion(deployment, facts, table) is not None:
            return "excluded"
        if self._inflight.get(alias, 0) >= shadow.max_concurrency:
            return "dropped_concurrency"
        estimate = estimated_cost(deployment, facts) or 0.0
        day = datetime.now(UTC).date().isoformat()
        spent_day, spent = self._spent.get(alias, (day, 0.0))
        spent = spent if spent_day == day else 0.0
        if spent + estimate > shadow.budget_usd_per_day:
            return "dropped_budget"
        self._spent[alias] = (day, spent + estimate)
        self._inflight[alias] = self._inflight.get(alias, 0) + 1
        return estimate

    def _settle(self, alias: str, estimate: float, cost: float) -> None:
        day, spent = self._spent.get(alias, ("", 0.0))
        self._spent[alias] = (day, max(0.0, spent + cost - estimate))

    async def _copy(self, primary: _Primary, shadow: Shadow, deployment: Deployment, estimate: float) -> None:
        request = primary.request
        alias = request.plan.alias
        call = UpstreamCall(
            endpoint=request.parsed.endpoint,
            deployment=deployment,
            body=shadow_body(request.parsed.body, deployment),
            timeouts=request.plan.timeouts,
            request_id=f"{request.request_id}-shadow",
        )
        begun = time.perf_counter()
        shadow_answer: Answer
        cost = 0.0
        tokens = 0
        try:
            reply = await request.providers[deployment.provider.name].send(call)
        except PolyrouteError as err:
            error = err.error_class.value if isinstance(err, UpstreamError) else type(err).__name__
            shadow_answer = Answer(error=error)
        else:
            used = reply.usage or estimated_usage(request.parsed.prompt_tokens, output_tokens_in_body(reply.body))
            cost = request_cost(deployment, used)
            tokens = used.input_tokens + used.output_tokens
            shadow_answer = answer_of_body(reply.body)
        finally:
            self._inflight[alias] -= 1
        latency = time.perf_counter() - begun
        self._settle(alias, estimate, cost)
        self._compared(primary, shadow, deployment, shadow_answer, latency, cost, tokens)

    def _compared(
        self, primary: _Primary, shadow: Shadow, deployment: Deployment, theirs: Answer, latency: float,
        cost: float, tokens: int,
    ) -> None:
        request = primary.request
        alias, target = request.plan.alias, deployment.name
        stats = self.results.pair(alias, target)
        ours = primary.answer()
        stats.primary_errors += ours.error is not None
        stats.shadow_errors += theirs.error is not None
        if theirs.error is not None:
            stats.error_classes[theirs.error] = stats.error_classes.get(theirs.error, 0) + 1
        if ours.error is not None or theirs.error is not None:
            stats.results["error"] += 1
            self._metrics.shadow(alias=alias, target=target, result="error")
            return
        agreement = compare(ours, theirs, request.parsed.body)
        stats.add(agreement)
        stats.results["compared"] += 1
        stats.primary_latency_s += primary.duration_s
        stats.shadow_latency_s += latency
        stats.primary_first_token_s += primary.first_token_s or primary.duration_s
        stats.primary_tokens += primary.tokens
        stats.shadow_tokens += tokens
        stats.primary_cost_usd += primary.cost_usd
        stats.shadow_cost_usd += cost
        self._metrics.shadow(alias=alias, target=target, result="compared")
        self._metrics.shadow_compared(
            alias=alias, target=target, similarity=agreement.similarity,
            latency_ratio=latency / primary.duration_s if primary.duration_s > 0 else None,
            cost_ratio=cost / primary.cost_usd if primary.cost_usd > 0 else None,
        )
        facts = request.facts
        sensitive = facts is not None and facts.data_class in request.table.sensitive_data_classes
        if shadow.record is not None and not sensitive:
            pair = {
                "ts": time.time(), "alias": alias, "primary": primary.deployment, "target": target,
                "request": request.parsed.body, "primary_text": ours.text, "shadow_text": theirs.text,
                "similarity": agreement.similarity, "exact": agreement.exact,
                "latency_s": {"primary": round(primary.duration_s, 6), "shadow": round(latency, 6)},
                "cost_usd": {"primary": primary.cost_usd, "shadow": cost},
            }
            recorder = self._recorders.get(shadow.record)
            if recorder is None:
                recorder = self._recorders[shadow.record] = PairRecorder(Path(shadow.record))
            if not recorder.offer(pair):
                stats.record_dropped += 1

    async def settled(self) -> None:
        """Wait until the copies under way have been compared (for a caller that reads the results right after)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Stop copies still under way (shadow work is expendable) and write out the queued records."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for recorder in self._recorders.values():
            await recorder.close()


class _Primary:
    """What a copy is compared with: the finished primary request's answer and numbers."""

    __slots__ = ("cost_usd", "deployment", "duration_s", "first_token_s", "request", "status", "tokens")

    def __init__(
        self, request: ProxiedRequest, status: int, usage: Usage | None, cost_usd: float, duration_s: float,
        first_token_s: float | None,
    ) -> None:
        self.request, self.status, self.cost_usd = request, status, cost_usd
        self.duration_s, self.first_token_s = duration_s, first_token_s
        self.tokens = usage.input_tokens + usage.output_tokens if usage is not None else 0
        answered = request.outcome.deployment
        self.deployment = answered.name if answered is not None else None

    def answer(self) -> Answer:
        """Parsed in the copy's task, never on the request path."""
        if self.status >= 400:
            failures = self.request.outcome.failures
            return Answer(error=failures[-1].error_class.value if failures else f"status_{self.status}")
        captured = self.request.shadow_capture
        if self.request.parsed.stream:
            return answer_of_stream(captured or ())
        return answer_of_body(captured[0] if captured else b"")
