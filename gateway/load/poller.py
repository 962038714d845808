"""One poller per self-hosted engine: reads its Prometheus metrics every `poll`, bounded in bytes and in time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.load.signals import EngineReading, learn_slots, read_signals
from gateway.policy.table import Provider

if TYPE_CHECKING:  # aiohttp is imported once an engine is polled: a server without one starts without it
    import aiohttp

log = logging.getLogger("polyroute.load")

MAX_METRICS_BYTES = 4 * 1024 * 1024  # a vLLM server with many models and histograms sends a few hundred KiB
MIN_TIMEOUT_S = 0.5
MAX_TIMEOUT_S = 2.0
STALE_POLLS = 3  # a reading older than this many polls is not used: polyroute's in-flight count stands in


def read_timeout(poll_s: float) -> float:
    """How long one read may take: three polls, within [0.5 s, 2 s] (a reading older than that is stale anyway)."""
    return min(MAX_TIMEOUT_S, max(MIN_TIMEOUT_S, STALE_POLLS * poll_s))


class EnginePoller:
    """Keeps the last good reading of one engine and when it was taken; never raises out of its loop."""

    def __init__(
        self, provider: Provider, session: aiohttp.ClientSession, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if provider.metrics_url is None:
            raise ValueError(f"provider {provider.name} has no metrics URL")
        self.provider = provider
        self.url = provider.metrics_url
        self._session = session
        self._clock = clock
        self.reading: EngineReading | None = None
        self.read_at: float | None = None
        self.error: str | None = None  # why the last read failed; None after a good one
        self.slots: float | None = None  # learned from the readings (signals.learn_slots)
        self.good_reads = 0

    @property
    def poll_s(self) -> float:
        return self.provider.poll_s

    def fresh(self, now: float) -> bool:
        return self.read_at is not None and now - self.read_at <= STALE_POLLS * self.poll_s

    async def run(self, on_read: Callable[[], None]) -> None:
        while True:
            await self.read_once()
            on_read()
            await asyncio.sleep(self.poll_s)

    async def read_once(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=read_timeout(self.poll_s))
        try:
            async with self._session.get(self.url, timeout=timeout, allow_redirects=False) as response:
                if response.status != 200:
                    raise _ReadError(f"HTTP {response.status}")
                body = await response.content.read(MAX_METRICS_BYTES + 1)
            if len(body) > MAX_METRICS_BYTES:
                raise _ReadError(f"metrics larger than {MAX_METRICS_BYTES} bytes")
            reading = read_signals(self.provider.engine, body.decode("utf-8", errors="replace"))
        except TimeoutError:
            self._failed(f"no answer within {read_timeout(self.poll_s):g}s")
        except (aiohttp.ClientError, ValueError) as exc:  # ValueError: not Prometheus text, or no queue metric
            self._failed(str(exc) or type(exc).__name__)
        else:
            self.reading, self.read_at, self.error = reading, self._clock(), None
            self.slots = learn_slots(self.slots, reading)
            self.good_reads += 1

    def _failed(self, why: str) -> None:
        if self.error is None:  # logged once per outage, not four times a second
            log.warning("engine metrics of provider %s unreadable: %s", self.provider.name, why)
        self.error = why[:200]


class _ReadError(ValueError):
    pass
