"""Ratios across interleaved rounds: each round's ratio, then their median and min-max."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.measure import Latencies, LoadResult

if TYPE_CHECKING:
    from bench.harness import ScenarioResult


@dataclass(frozen=True)
class Spread:
    """The median of per-round values and their smallest and largest."""

    median: float
    low: float
    high: float
    rounds: int

    def ratio(self) -> str:
        if self.rounds == 1:
            return f"{self.median:.2f}x"
        return f"{self.median:.2f}x ({self.low:.2f}-{self.high:.2f})"

    def number(self, fmt: str) -> str:
        if self.rounds == 1:
            return fmt.format(self.median)
        return f"{fmt.format(self.median)} ({fmt.format(self.low)}-{fmt.format(self.high)})"


def of(values: Sequence[float]) -> Spread | None:
    if not values:
        return None
    return Spread(statistics.median(values), min(values), max(values), len(values))


def loads(r: ScenarioResult | None, workload: str, concurrency: int) -> dict[int, LoadResult]:
    """A scenario's runs of one workload at one concurrency, by round."""
    if r is None:
        return {}
    return {x.round: x for x in r.loads if x.workload == workload and x.concurrency == concurrency}


def metric(r: ScenarioResult | None, workload: str, concurrency: int, pick: Callable[[LoadResult], float | None]) -> (
    Spread | None
):
    values = [v for v in (pick(x) for x in loads(r, workload, concurrency).values()) if v is not None]
    return of(values)


def throughput_ratio(r: ScenarioResult | None, base: ScenarioResult | None, workload: str, c: int) -> Spread | None:
    """req/s over the base's, round by round (both measured within the same round, one after the other)."""
    mine, theirs = loads(r, workload, c), loads(base, workload, c)
    return of([mine[n].rps / theirs[n].rps for n in sorted(mine.keys() & theirs.keys()) if theirs[n].rps])


def cpu_ratio(r: ScenarioResult | None, base: ScenarioResult | None, workload: str, c: int, *,
              without_exporter: bool = False) -> Spread | None:
    """The base's gateway CPU per request over this scenario's, round by round: what one core would serve
    (`without_exporter`: this scenario's span exporter processes left out, the gateway worker's core alone)."""
    mine, theirs = loads(r, workload, c), loads(base, workload, c)
    values = []
    for n in sorted(mine.keys() & theirs.keys()):
        a, b = mine[n].cpu_us_per_req, theirs[n].cpu_us_per_req
        if a and without_exporter:
            a -= mine[n].exporter_us_per_req or 0.0
        if a and b:
            values.append(b / a)
    return of(values)


def added_sequential_us(r: ScenarioResult | None, base: ScenarioResult | None, *, ttft: bool) -> Spread | None:
    """Latency at concurrency 1 over the base's, round by round (µs): time to first token of a stream, or the
    p50 of a whole non-stream answer."""
    if r is None or base is None:
        return None
    def p50(x: Latencies) -> float:
        return x.ttft_p50_ms if ttft else x.total_p50_ms

    mine = {n: p50(x) for n, x in (r.ttft if ttft else r.plain).items()}
    theirs = {n: p50(x) for n, x in (base.ttft if ttft else base.plain).items()}
    return of([(mine[n] - theirs[n]) * 1000 for n in sorted(mine.keys() & theirs.keys())])


def added_p50_ms(r: ScenarioResult | None, base: ScenarioResult | None, workload: str, c: int) -> Spread | None:
    """p50 latency over the base's, round by round (ms)."""
    mine, theirs = loads(r, workload, c), loads(base, workload, c)
    return of([mine[n].p50_ms - theirs[n].p50_ms for n in sorted(mine.keys() & theirs.keys())])
