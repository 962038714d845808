"""Load and latency measurements: wrk runs (throughput, latency percentiles, errors) and a precise TTFT client."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.procs import HOST, cpu_seconds
from bench.workloads import NON_STREAM, STREAM, Workload

LUA = Path(__file__).with_name("post.lua")
PATH = "/v1/chat/completions"
NATIVE_MODEL = "bench-messages"  # polyroute's alias whose provider speaks Messages itself (bench/policy.yaml)
SPAN_EXPORTER = b"gateway.observability.span_exporter"  # a traced gateway's exporter processes (command line)


@dataclass(frozen=True)
class Target:
    """Where a scenario sends requests: its port, the model name, the client key (if any)."""

    port: int
    model: str
    key: str = ""
    polyroute: bool = False

    def body(self, stream: bool) -> bytes:
        return self.workload_body(STREAM if stream else NON_STREAM)

    def workload_body(self, workload: Workload) -> bytes:
        return workload.body(NATIVE_MODEL if workload.native and self.polyroute else self.model)

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"} if self.key else {}


@dataclass(frozen=True)
class LoadResult:
    """One wrk run: requests/s, latency percentiles (ms), errors, and the gateway CPU it cost."""

    concurrency: int
    stream: bool
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    cpu_cores: float | None  # gateway CPU time / wall time (1.0 = one core busy)
    cpu_us_per_req: float | None
    workload: str = ""
    round: int = 0
    exporter_us_per_req: float | None = None  # the part of cpu_us_per_req spent in span exporter processes


def run_wrk(
    target: Target,
    *,
    stream: bool,
    concurrency: int,
    seconds: int,
    core: str | None,
    gateway_pid: int | None,
    workload: Workload | None = None,
    round_no: int = 0,
) -> LoadResult:
    """A bounded wrk run (one thread, `concurrency` keep-alive connections), the gateway's CPU measured around it."""
    work = workload or (STREAM if stream else NON_STREAM)
    body_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"polyroute-bench-{os.getpid()}-{target.port}-{work.name}.json"
    body_file.write_bytes(target.workload_body(work))
    argv = [
        "wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s", "--latency", "-s", str(LUA),
        f"http://{HOST}:{target.port}{work.path}",
    ]
    if core is not None:
        argv = ["taskset", "-c", core, *argv]
    env = {**os.environ, "BENCH_BODY_FILE": str(body_file), "BENCH_AUTH": target.key}
    cpu_before = cpu_seconds(gateway_pid) if gateway_pid else None
    exporter_before = cpu_seconds(gateway_pid, only=SPAN_EXPORTER) if gateway_pid else None
    began = time.perf_counter()
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False)
    finally:
        body_file.unlink(missing_ok=True)
    wall = time.perf_counter() - began
    cpu_used = cpu_seconds(gateway_pid) - cpu_before if gateway_pid and cpu_before is not None else None
    exporter_used = (cpu_seconds(gateway_pid, only=SPAN_EXPORTER) - exporter_before
                     if gateway_pid and exporter_before is not None else None)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    requests = int(data["requests"])
    duration_s = data["duration_us"] / 1e6
    return LoadResult(
        workload=work.name,
        round=round_no,
        concurrency=concurrency,
        stream=work.stream,
        requests=requests,
        rps=requests / duration_s if duration_s else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        non_2xx=int(data["non_2xx"]),
        socket_errors=int(data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"]),
        cpu_cores=cpu_used / wall if cpu_used is not None else None,
        cpu_us_per_req=cpu_used / requests * 1e6 if cpu_used is not None and requests else None,
        exporter_us_per_req=exporter_used / requests * 1e6 if exporter_used and requests else None,
    )


@dataclass(frozen=True)
class Latencies:
    """Sequential requests on one keep-alive connection (concurrency 1): time to first `data:` byte, and total."""

    ttft_p50_ms: float
    ttft_p99_ms: float
    total_p50_ms: float
    samples: int
    failures: int


def measure_sequential(target: Target, *, stream: bool, count: int, warmup: int = 20) -> Latencies:
    return asyncio.run(_sequential(target, stream, count, warmup))


async def _sequential(target: Target, stream: bool, count: int, warmup: int) -> Latencies:
    body = target.body(stream)
    head = (
        f"POST {PATH} HTTP/1.1\r\nhost: {HOST}:{target.port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in target.headers().items())
        + "\r\n"
    ).encode()
    request = head + body
    reader, writer = await asyncio.open_connection(HOST, target.port)
    first: list[float] = []
    total: list[float] = []
    failures = 0
    try:
        for i in range(warmup + count):
            began = time.perf_counter()
            writer.write(request)
            ok, first_s = await _read_response(reader, began)
            elapsed = time.perf_counter() - began
            if i < warmup:
                continue
            if not ok:
                failures += 1
                continue
            first.append(first_s if stream else elapsed)
            total.append(elapsed)
    finally:
        writer.close()
    if not first:
        return Latencies(0.0, 0.0, 0.0, 0, failures)
    first.sort()
    return Latencies(
        ttft_p50_ms=statistics.median(first) * 1000,
        ttft_p99_ms=first[min(len(first) - 1, int(len(first) * 0.99))] * 1000,
        total_p50_ms=statistics.median(total) * 1000,
        samples=len(first),
        failures=failures,
    )


async def _read_response(reader: asyncio.StreamReader, began: float) -> tuple[bool, float]:
    """Read one HTTP/1.1 response (content-length or chunked); (status was 200, seconds to the first `data:`)."""
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    ok = lines[0].split(" ")[1] == "200"
    headers: Mapping[str, str] = {
        k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
    }
    first_s = 0.0
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
        return ok, time.perf_counter() - began
    seen = False
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if not seen and b"data:" in chunk:
            first_s = time.perf_counter() - began
            seen = True
        if size == 0:
            return ok, first_s
