"""Shadow evaluation's results per alias and shadow target, kept in memory per replica, and when a target passed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.portability.shadow_compare import Agreement

# A shadow target "passed" for an alias (and counts as a proven alternative in the lock-in report) once it answered
# at least this many compared pairs, agreed on average at least this much, and failed no more often than the primary.
PASS_MIN_PAIRS = 50
PASS_MIN_SIMILARITY = 0.9
RESULTS = ("compared", "dropped_budget", "dropped_concurrency", "excluded", "error")


@dataclass(slots=True)
class PairStats:
    """Running sums over one (alias, shadow target) pair; means are worked out when reported."""

    results: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULTS, 0))
    primary_errors: int = 0
    shadow_errors: int = 0
    error_classes: dict[str, int] = field(default_factory=dict)  # the shadow's failures by class
    compared: int = 0
    exact: int = 0
    similarity: float = 0.0
    json_asked: int = 0
    json_valid: int = 0
    json_same_keys: int = 0
    tools_asked: int = 0
    tool_names: int = 0
    tool_arguments: int = 0
    primary_latency_s: float = 0.0
    shadow_latency_s: float = 0.0
    primary_first_token_s: float = 0.0
    primary_tokens: int = 0
    shadow_tokens: int = 0
    primary_cost_usd: float = 0.0
    shadow_cost_usd: float = 0.0
    record_dropped: int = 0

    def add(self, agreement: Agreement) -> None:
        self.compared += 1
        self.exact += agreement.exact
        self.similarity += agreement.similarity
        if agreement.json_valid is not None:
            self.json_asked += 1
            self.json_valid += agreement.json_valid
            self.json_same_keys += bool(agreement.json_same_keys)
        if agreement.tool_names is not None:
            self.tools_asked += 1
            self.tool_names += agreement.tool_names
            self.tool_arguments += bool(agreement.tool_arguments)

    @property
    def passed(self) -> bool:
        return (
            self.compared >= PASS_MIN_PAIRS
            and self.similarity / self.compared >= PASS_MIN_SIMILARITY
            and self.shadow_errors <= self.primary_errors
        )

    def report(self) -> dict[str, Any]:
        n = self.compared

        def mean(total: float) -> float | None:
            return round(total / n, 6) if n else None

        def share(part: int, whole: int) -> float | None:
            return round(part / whole, 4) if whole else None

        return {
            "results": dict(self.results),
            "compared": n,
            "passed": self.passed,
            "errors": {"primary": self.primary_errors, "shadow": self.shadow_errors, "classes": self.error_classes},
            "agreement": {
                "exact": share(self.exact, n),
                "similarity": mean(self.similarity),
                "json_valid": share(self.json_valid, self.json_asked),
                "json_same_keys": share(self.json_same_keys, self.json_asked),
                "tool_names": share(self.tool_names, self.tools_asked),
                "tool_arguments": share(self.tool_arguments, self.tools_asked),
            },
            # Copies are sent as non-stream requests: their time to first token is their total time.
            "latency_s": {"primary": mean(self.primary_latency_s), "shadow": mean(self.shadow_latency_s)},
            "first_token_s": {"primary": mean(self.primary_first_token_s), "shadow": mean(self.shadow_latency_s)},
            "tokens": {"primary": mean(self.primary_tokens), "shadow": mean(self.shadow_tokens)},
            "cost_usd": {"primary": round(self.primary_cost_usd, 8), "shadow": round(self.shadow_cost_usd, 8)},
            "record_dropped": self.record_dropped,
        }


class ShadowResults:
    """Every pair's stats in this replica (bounded: one entry per alias and shadow target of the policy)."""

    def __init__(self) -> None:
        self._pairs: dict[tuple[str, str], PairStats] = {}

    def pair(self, alias: str, target: str) -> PairStats:
        stats = self._pairs.get((alias, target))
        if stats is None:
            stats = self._pairs[(alias, target)] = PairStats()
        return stats

    def proven(self) -> dict[str, list[str]]:
        """Per alias, the shadow targets that passed (see PASS_MIN_PAIRS and PASS_MIN_SIMILARITY)."""
        proven: dict[str, list[str]] = {}
        for (alias, target), stats in sorted(self._pairs.items()):
            if stats.passed:
                proven.setdefault(alias, []).append(target)
        return proven

    def report(self, alias: str | None = None) -> dict[str, Any]:
        """JSON-ready: per alias, per shadow target (GET /admin/shadow and `polyroute shadow report --json`)."""
        aliases: dict[str, dict[str, Any]] = {}
        for (name, target), stats in sorted(self._pairs.items()):
            if alias is None or name == alias:
                aliases.setdefault(name, {})[target] = stats.report()
        return {
            "thresholds": {"min_pairs": PASS_MIN_PAIRS, "min_similarity": PASS_MIN_SIMILARITY},
            "aliases": aliases,
        }
