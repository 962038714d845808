"""Long-lived streams: hundreds to thousands of concurrent streams from a slow upstream, a token every interval.

For each level (number of concurrent streams) and each gateway, a client pinned to the client core opens that many
streams (their starts spread over `RAMP_S`), records the gap between consecutive content chunks as it sees them,
and reads the gateway's CPU time over a window in which every stream is open. Reported: gateway CPU per relayed
chunk, the p50/p99 of the gaps against the same sent straight to the slow upstream, and streams per core.

The client runs as `python -m bench.longstreams --port P --streams N ...` and prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass

from bench.procs import HOST, cpu_split

RAMP_S = 0.5
_WORD = b'"content":"word '


@dataclass(frozen=True)
class StreamsLevel:
    """One gateway at one level: what the client saw and what the gateway spent."""

    scenario: str
    streams: int
    completed: int
    failed: int
    chunks: int
    gap_p50_ms: float
    gap_p99_ms: float
    window_chunks: int
    cpu_us_per_chunk: float | None
    wall_s: float
    kernel_us_per_chunk: float | None = None  # the system-time part of cpu_us_per_chunk


class _Stream(asyncio.Protocol):
    def __init__(self, request: bytes, gaps: list[float], counter: list[int], done: asyncio.Future[bool]) -> None:
        self._request = request
        self._gaps = gaps
        self._counter = counter
        self._done = done
        self._last: float | None = None
        self._first = True
        self._ok = False
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        transport.write(self._request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self._first:
            self._ok = data.startswith(b"HTTP/1.1 200")
            self._first = False
        words = data.count(_WORD)
        if words:
            self._counter[0] += words
            if self._last is not None:
                self._gaps.append(now - self._last)
            self._gaps.extend([0.0] * (words - 1))  # events that arrived together: the client saw no gap
            self._last = now
        if b"[DONE]" in data and not self._done.done():
            self._done.set_result(self._ok)
            assert self._transport is not None
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(False)


async def _client(
    port: int, streams: int, model: str, key: str, duration_s: float, pid: int | None
) -> dict[str, object]:
    body = json.dumps({"model": model, "stream": True, "max_tokens": 4000,
                       "messages": [{"role": "user", "content": "Write a long answer."}]}).encode()
    auth = f"authorization: Bearer {key}\r\n" if key else ""
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {HOST}:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{auth}\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    counter = [0]
    dones: list[asyncio.Future[bool]] = []
    began = time.perf_counter()

    async def one(delay: float) -> None:
        await asyncio.sleep(delay)
        done: asyncio.Future[bool] = loop.create_future()
        dones.append(done)
        try:
            await loop.create_connection(lambda: _Stream(request, gaps, counter, done), HOST, port)
        except OSError:
            done.set_result(False)

    rng = random.Random(20)
    await asyncio.gather(*(one(rng.uniform(0, RAMP_S)) for _ in range(streams)))
    # A window in which every stream is open: from RAMP_S + 0.5 s to just before the first one ends.
    window_start, window_end = RAMP_S + 0.5, max(RAMP_S + 0.8, duration_s - 0.3)
    await asyncio.sleep(max(0.0, began + window_start - time.perf_counter()))
    cpu0, chunks0 = (cpu_split(pid) if pid else None), counter[0]
    await asyncio.sleep(max(0.0, began + window_end - time.perf_counter()))
    cpu1, chunks1 = (cpu_split(pid) if pid else None), counter[0]
    finished = await asyncio.wait_for(asyncio.gather(*dones), timeout=duration_s * 3 + 30)
    gaps.sort()
    window_chunks = chunks1 - chunks0
    return {
        "completed": sum(1 for f in finished if f),
        "failed": sum(1 for f in finished if not f),
        "chunks": counter[0],
        "gap_p50_ms": statistics.median(gaps) * 1000 if gaps else 0.0,
        "gap_p99_ms": gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))] * 1000 if gaps else 0.0,
        "window_chunks": window_chunks,
        "cpu_us_per_chunk": (sum(cpu1) - sum(cpu0)) / window_chunks * 1e6
        if cpu0 is not None and cpu1 is not None and window_chunks else None,
        "wall_s": time.perf_counter() - began,
        "kernel_us_per_chunk": (cpu1[1] - cpu0[1]) / window_chunks * 1e6
        if cpu0 is not None and cpu1 is not None and window_chunks else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--key", default="")
    parser.add_argument("--duration", type=float, required=True, help="seconds each stream lasts upstream")
    parser.add_argument("--pid", type=int, help="the gateway's pid, for its CPU time")
    args = parser.parse_args()
    import uvloop  # the client must not be the bottleneck: it relays as many chunks as the gateways

    out = uvloop.run(_client(args.port, args.streams, args.model, args.key, args.duration, args.pid))
    sys.stdout.write("BENCH_STREAMS " + json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
