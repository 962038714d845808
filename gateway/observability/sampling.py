"""Which requests are traced: OTEL_TRACES_SAMPLER and its argument, read as the SDK reads them, decided in a compare.

The SDK's samplers take Context and SpanContext objects on every span; the six built-in ones reduce to a bound on
the trace id's low 64 bits (always_on = all of them, always_off = none, traceidratio = rate * 2**64, rounded as the
SDK's TraceIdRatioBased rounds it) and, for the parentbased_* ones, a remote parent's sampled flag.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("polyroute.tracing")

_ALL = 1 << 64
_LOW_64 = _ALL - 1
_DEFAULT = "parentbased_always_on"
_KNOWN = ("always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
          "parentbased_traceidratio")


@dataclass(frozen=True, slots=True)
class Sampler:
    """A sampling decision per trace: `bound` on the trace id's low 64 bits; `parent_based` follows a parent's flag."""

    bound: int
    parent_based: bool

    def sampled(self, trace_id: int, parent_sampled: bool | None) -> bool:
        """Whether a request of trace `trace_id` is recorded; `parent_sampled` is None without a valid parent."""
        if parent_sampled is not None and self.parent_based:
            return parent_sampled
        return trace_id & _LOW_64 < self.bound


def sampler_from(name: str | None, argument: str | None) -> Sampler:
    """The sampler OTEL_TRACES_SAMPLER=`name` (OTEL_TRACES_SAMPLER_ARG=`argument`) makes in the SDK, fallbacks
    included: an unknown name is parentbased_always_on, a ratio that is not a number in [0, 1] is 1.0."""
    chosen = (name or _DEFAULT).lower()
    if chosen not in _KNOWN:
        log.warning("OTEL_TRACES_SAMPLER=%r is not a sampler polyroute knows; using %s", name, _DEFAULT)
        chosen = _DEFAULT
    parent_based = chosen.startswith("parentbased_")
    root = chosen.removeprefix("parentbased_")
    if root == "always_on":
        return Sampler(_ALL, parent_based)
    if root == "always_off":
        return Sampler(0, parent_based)
    try:
        rate = float(argument or "")
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        log.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a ratio between 0 and 1; using 1.0", argument)
        rate = 1.0
    return Sampler(round(rate * _ALL), parent_based)
