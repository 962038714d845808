"""Strategies: how an alias orders the deployments that are eligible for a request."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from gateway.policy.charges import charge, text_estimate
from gateway.policy.plan import HealthSnapshot, RequestFacts
from gateway.policy.table import Alias, Deployment, Strategy

# Output tokens assumed for a cost estimate when the request sets no max_tokens.
DEFAULT_OUTPUT_ESTIMATE = 256


def expected_output_tokens(facts: RequestFacts) -> int:
    return facts.max_output_tokens if facts.max_output_tokens is not None else DEFAULT_OUTPUT_ESTIMATE


def estimated_cost(deployment: Deployment, facts: RequestFacts) -> float | None:
    """USD a request would cost on a deployment (at the tier its prompt selects), or None when its price is unknown.

    The engine has no clock: a dated price book is estimated at its first entry; accounting bills the one in force.
    """
    if deployment.price.source == "unknown":
        return None
    if not facts.images:
        return text_estimate(deployment.price, facts.prompt_tokens, expected_output_tokens(facts))
    return charge(
        deployment.price, input_tokens=facts.prompt_tokens, output_tokens=expected_output_tokens(facts),
        images=facts.images, image_variant=facts.image_variant,
    ).usd


def order(
    alias: Alias,
    eligible: Sequence[Deployment],
    facts: RequestFacts,
    health: HealthSnapshot,
) -> list[Deployment]:
    """Order eligible deployments by the alias's strategy; ties keep the alias's listed order."""
    listed = list(eligible)
    if alias.strategy is Strategy.PRIORITY:
        return listed
    if alias.strategy is Strategy.WEIGHTED:
        weights = dict(zip(alias.targets, alias.weights, strict=True))
        return _weighted_shuffle(listed, [weights.get(d.name, 1.0) for d in listed], health.random_seed)
    if alias.strategy is Strategy.LOWEST_COST:
        return sorted(listed, key=lambda d: _unknown_last(estimated_cost(d, facts)))
    if alias.strategy is Strategy.LOWEST_LATENCY:
        # Deployments never measured go first so that every target gets observed.
        return sorted(listed, key=lambda d: health.latency_ewma_s.get(d.name, -1.0))
    # least_busy (spillover is ordered by gateway.policy.spillover, which needs the load snapshot too)
    return sorted(listed, key=lambda d: health.inflight.get(d.name, 0))


def _unknown_last(cost: float | None) -> float:
    return math.inf if cost is None else cost


def _weighted_shuffle(items: list[Deployment], weights: list[float], seed: float | None) -> list[Deployment]:
    """Draw without replacement in proportion to weight: the first pick follows the weights exactly."""
    rng = random.Random(seed) if seed is not None else random
    keyed = [(rng.random() ** (1.0 / w) if w > 0 else 0.0, i) for i, w in enumerate(weights)]
    keyed.sort(reverse=True)
    return [items[i] for _, i in keyed]
