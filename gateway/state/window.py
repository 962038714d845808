"""Sliding one-minute windows of requests and tokens in this process; lua/window.lua keeps the same ones in Redis.

A window is one-second buckets of (requests, tokens), running sums over the buckets still counted, and `lo`, the
oldest bucket still counted. Loading a window at bucket `b` first drops the buckets older than `b - WINDOW_BUCKETS + 1`
from the sums. Corrections that give tokens back (settlement of an over-estimate) come off the oldest buckets first:
the sum is exact at once, and afterwards the window can only count more than really happened, never less.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.state.base import WINDOW_BUCKETS


@dataclass(slots=True)
class Window:
    lo: int
    requests: int = 0
    tokens: int = 0
    buckets: dict[int, list[int]] = field(default_factory=dict)  # bucket -> [requests, tokens]


class SlidingWindows:
    """Every subject's (a tenant's, a deployment's) window, keyed by (kind, name)."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], Window] = {}

    def load(self, key: tuple[str, str], bucket: int) -> Window | None:
        """The window as counted at `bucket`, expired buckets dropped; None when nothing is counted."""
        w = self._windows.get(key)
        if w is None:
            return None
        lo = bucket - WINDOW_BUCKETS + 1
        if w.lo >= lo:
            return w
        if lo - w.lo >= WINDOW_BUCKETS:
            del self._windows[key]
            return None
        for old in range(w.lo, lo):
            gone = w.buckets.pop(old, None)
            if gone is not None:
                w.requests -= gone[0]
                w.tokens -= gone[1]
        w.lo = lo
        return w

    def used(self, key: tuple[str, str], bucket: int) -> tuple[int, int]:
        w = self.load(key, bucket)
        return (0, 0) if w is None else (w.requests, w.tokens)

    def add(self, key: tuple[str, str], bucket: int, requests: int, tokens: int) -> tuple[int, int]:
        """Count more requests and tokens (negative: give them back, oldest first); returns the new sums."""
        w = self.load(key, bucket)
        if w is None:
            if requests <= 0 and tokens <= 0:
                return (0, 0)
            w = self._windows[key] = Window(bucket - WINDOW_BUCKETS + 1)
        at = max(bucket, w.lo)  # a replica whose clock runs behind never writes below what is counted
        for slot, delta in ((0, requests), (1, tokens)):
            if delta > 0:
                w.buckets.setdefault(at, [0, 0])[slot] += delta
                _add_sum(w, slot, delta)
            elif delta < 0:
                _take_oldest(w, slot, -delta)
        return w.requests, w.tokens

    def passes_at(self, key: tuple[str, str], bucket: int, excess_requests: int, excess_tokens: int) -> int:
        """The first bucket from which `excess_*` more than the limits have left the window."""
        w = self.load(key, bucket)
        if w is not None:
            for at in range(w.lo, bucket + 1):
                counts = w.buckets.get(at)
                if counts is not None:
                    excess_requests -= counts[0]
                    excess_tokens -= counts[1]
                if excess_requests <= 0 and excess_tokens <= 0:
                    return at + WINDOW_BUCKETS
        return bucket + WINDOW_BUCKETS  # more than a whole window holds: as long as the window


def _add_sum(w: Window, slot: int, delta: int) -> None:
    if slot == 0:
        w.requests += delta
    else:
        w.tokens += delta


def _take_oldest(w: Window, slot: int, amount: int) -> None:
    for at in sorted(w.buckets):
        if amount <= 0:
            return
        counts = w.buckets[at]
        taken = min(amount, counts[slot])
        counts[slot] -= taken
        amount -= taken
        _add_sum(w, slot, -taken)
