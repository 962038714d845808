"""The benchmark run: start the upstream (and Redis) and every gateway, load them in interleaved rounds, report.

Run it through `bench/run`, which installs what is missing first. `python -m bench.harness --help` lists options.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from bench import report
from bench.longstreams import StreamsLevel
from bench.measure import PATH, Latencies, LoadResult, Target, measure_sequential, run_wrk
from bench.procs import HOST, Served, StartError, cores, free_port, rss_mb, start, wait_idle
from bench.scenarios import ALL, BENCH, REPO, Context, Scenario
from bench.workloads import AGENT, SMALL, Workload


@dataclass(frozen=True)
class Plan:
    """How long and how hard: the full run or the CI smoke run."""

    seconds: int
    warmup_s: int
    concurrency: tuple[int, ...]
    sequential: int
    leak_requests: int = 0
    leak_max_s: int = 900
    rounds: int = 3  # interleaved: every scenario once per workload and concurrency, then the next round
    agent_seconds: int = 2
    agent_warmup_s: int = 1  # 0: no warm-up run for the coding-agent workloads
    agent_concurrency: tuple[int, ...] = (1, 16)
    stream_levels: tuple[int, ...] = (200, 500, 1000)  # concurrent long-lived streams
    stream_interval_ms: float = 50.0  # 20 tokens/s
    stream_tokens: int = 100


FULL = Plan(seconds=3, warmup_s=2, concurrency=(1, 16, 64), sequential=300)
SMOKE = Plan(
    seconds=1, warmup_s=0, concurrency=(16,), sequential=20, rounds=1, agent_seconds=1, agent_warmup_s=0,
    agent_concurrency=(16,),
    stream_levels=(50,), stream_tokens=20,
)
# The coding-agent workloads and the long-lived streams compare polyroute with the floor and the pass-through.
AGENT_SCENARIOS = ("direct", "nginx", "passthrough", "polyroute")


@dataclass
class ScenarioResult:
    name: str
    title: str
    startup_s: float | None = None
    rss_idle_mb: float | None = None
    rss_after_mb: float | None = None
    loads: list[LoadResult] = field(default_factory=list)
    ttft: dict[int, Latencies] = field(default_factory=dict)  # by round: stream, time to first `data:`
    plain: dict[int, Latencies] = field(default_factory=dict)  # by round: non-stream, whole answer
    leak: list[tuple[int, float]] | None = None  # (requests so far, RSS MiB)
    error: str | None = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description="polyroute against its baselines, one machine.")
    parser.add_argument("--smoke", action="store_true", help="a few seconds per scenario (CI); not for numbers")
    parser.add_argument("--skip-litellm", action="store_true", help="leave out LiteLLM's proxy")
    parser.add_argument("--long", action="store_true", help="also the leak check: 1,000,000 requests to polyroute")
    parser.add_argument("--leak-requests", type=int, help="the leak check's request count (implies --long)")
    parser.add_argument("--only", help=f"comma list of scenarios ({','.join(s.name for s in ALL)})")
    parser.add_argument("--seconds", type=int, help="override the seconds per load run")
    parser.add_argument("--rounds", type=int, help="override the number of interleaved rounds")
    parser.add_argument("--no-agent", action="store_true", help="leave out the coding-agent workloads")
    parser.add_argument("--no-streams", action="store_true", help="leave out the long-lived streams")
    parser.add_argument("--streams-only", action="store_true",
                        help="only the long-lived streams (no load rounds, no sequential requests)")
    parser.add_argument("--out", type=Path, help="where to write the report (default: bench/results, smoke: bench/out)")
    args = parser.parse_args(argv)

    plan = SMOKE if args.smoke else FULL
    if args.seconds:
        plan = replace(plan, seconds=args.seconds)
    if args.rounds:
        plan = replace(plan, rounds=args.rounds)
    if args.long or args.leak_requests:
        plan = replace(plan, leak_requests=args.leak_requests or 1_000_000)
    if args.streams_only and args.no_streams:
        parser.error("--streams-only and --no-streams leave nothing to run")
    chosen = [s for s in ALL if not (args.skip_litellm and s.name == "litellm")]
    if args.only:
        wanted = {w.strip() for w in args.only.split(",")}
        unknown = wanted - {s.name for s in ALL}
        if unknown:
            parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
        chosen = [s for s in chosen if s.name in wanted]
    workloads = SMALL if args.no_agent else (*SMALL, *AGENT)

    began = time.monotonic()
    stamp = dt.datetime.now(dt.UTC)
    work_dir = Path(tempfile.mkdtemp(prefix="polyroute-bench-"))
    results = [] if args.streams_only else run(chosen, plan, work_dir, workloads)
    streams = [] if args.no_streams else run_streams(chosen, plan, work_dir)
    elapsed = time.monotonic() - began

    partial = (args.smoke or args.only or args.seconds or args.rounds or args.no_agent or args.no_streams
               or args.streams_only or args.leak_requests)
    out_dir = args.out or (BENCH / "out" if partial else BENCH / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    name = ("smoke-" if args.smoke else "") + stamp.strftime("%Y%m%dT%H%M%SZ")
    text = report.render(results, streams, plan_text(plan, args), stamp, elapsed, smoke=args.smoke)
    md = out_dir / f"{name}.md"
    md.write_text(text)
    raw = {"scenarios": [asdict(r) for r in results], "long_streams": [asdict(s) for s in streams]}
    (out_dir / f"{name}.json").write_text(json.dumps(raw, indent=1))
    if not partial and args.out is None:
        results_md = BENCH / "RESULTS.md"
        old = results_md.read_text() if results_md.exists() else ""
        results_md.write_text(report.merge(old, text))
        print(f"bench: wrote the tables into {results_md} (other sections kept)")
    print(text)
    print(f"bench: wrote {md} in {elapsed:.0f}s")
    shutil.rmtree(work_dir, ignore_errors=True)
    failed = any(r.error for r in results) or any(s.failed for s in streams)
    return 1 if failed else 0


def plan_text(plan: Plan, args: argparse.Namespace) -> str:
    mode = "smoke" if args.smoke else "full"
    extra = f", leak check {plan.leak_requests:,} requests" if plan.leak_requests else ""
    return (
        f"{mode} run: {plan.rounds} interleaved round(s); per round {plan.seconds}s per load run at concurrency "
        f"{', '.join(map(str, plan.concurrency))} and {plan.agent_seconds}s per coding-agent run at "
        f"{', '.join(map(str, plan.agent_concurrency))}, after {plan.warmup_s}s warm-up per workload; "
        f"{plan.sequential} sequential requests for TTFT; long-lived streams at "
        f"{', '.join(map(str, plan.stream_levels))} concurrent streams of {plan.stream_tokens} tokens every "
        f"{plan.stream_interval_ms:.0f} ms{extra}"
    )


def run(
    chosen: list[Scenario], plan: Plan, work_dir: Path, workloads: tuple[Workload, ...]
) -> list[ScenarioResult]:
    """Start every gateway, then load them in interleaved rounds: for each workload and concurrency every
    scenario in turn (A, B, A, B ...), so a change in the machine's background load falls on all of them."""
    client_core, gateway_core = cores()
    upstream_port = free_port()
    upstream = start(
        "upstream", [sys.executable, "-m", "bench.upstream", "--port", str(upstream_port)],
        port=upstream_port, env={"PYTHONPATH": str(REPO)}, core=client_core, log_dir=work_dir, probe=None,
    )
    redis: Served | None = None
    servers: dict[str, Served] = {}
    results = {s.name: ScenarioResult(s.name, s.title) for s in chosen}
    try:
        if any(s.needs_redis for s in chosen):
            redis_port = free_port()
            redis = start(
                "redis",
                ["redis-server", "--port", str(redis_port), "--bind", HOST, "--save", "", "--appendonly", "no"],
                port=redis_port, env={}, core=client_core, log_dir=work_dir, probe=None,
            )
        ctx = Context(
            upstream_url=f"http://{HOST}:{upstream_port}",
            redis_url=f"redis://{HOST}:{redis.port}/0" if redis else None,
            work_dir=work_dir,
        )
        targets: dict[str, tuple[Target, int | None, str | None]] = {}
        for scenario in chosen:
            print(f"bench: starting {scenario.name} ...", flush=True)
            try:
                targets[scenario.name] = _start(scenario, ctx, upstream, servers, results[scenario.name],
                                                client_core, gateway_core, work_dir)
            except (StartError, OSError, subprocess.SubprocessError) as err:
                _fail(results[scenario.name], err, servers.get(scenario.name))
        for workload in workloads:
            warmup = plan.agent_warmup_s if workload.agent else plan.warmup_s
            for scenario in chosen:
                if warmup and scenario.name in targets and _runs(scenario, workload):
                    target, _, core = targets[scenario.name]
                    _load(results, servers, targets, scenario, workload, 16, warmup, core, None, -1)
        for round_no in range(plan.rounds):
            print(f"bench: round {round_no + 1} of {plan.rounds}", flush=True)
            for workload in workloads:
                levels = plan.agent_concurrency if workload.agent else plan.concurrency
                seconds = plan.agent_seconds if workload.agent else plan.seconds
                for concurrency in levels:
                    for scenario in chosen:
                        if scenario.name in targets and _runs(scenario, workload):
                            target, pid, core = targets[scenario.name]
                            _load(results, servers, targets, scenario, workload, concurrency, seconds, core, pid,
                                  round_no)
            if plan.sequential:
                _sequential(results, servers, targets, chosen, plan.sequential, round_no)
        for scenario in chosen:
            if scenario.name not in targets:
                continue
            target, pid, _ = targets[scenario.name]
            result = results[scenario.name]
            try:
                if pid is not None:
                    result.rss_after_mb = rss_mb(pid)
                    if plan.leak_requests and scenario.name == "polyroute":
                        result.leak = _leak_check(target, plan, client_core, servers[scenario.name])
            except (RuntimeError, OSError, subprocess.SubprocessError) as err:
                _fail(result, err, servers.get(scenario.name))
        return list(results.values())
    finally:
        for server in servers.values():
            server.stop()
        if redis is not None:
            redis.stop()
        upstream.stop()


def _sequential(
    results: dict[str, ScenarioResult],
    servers: dict[str, Served],
    targets: dict[str, tuple[Target, int | None, str | None]],
    chosen: list[Scenario],
    count: int,
    round_no: int,
) -> None:
    """One round of latency at concurrency 1: every scenario in turn, non-stream then stream, so added latency is
    a difference within a round like every ratio."""
    for scenario in chosen:
        if scenario.name not in targets:
            continue
        target = targets[scenario.name][0]
        result = results[scenario.name]
        try:
            result.plain[round_no] = measure_sequential(target, stream=False, count=count)
            result.ttft[round_no] = measure_sequential(target, stream=True, count=count)
        except (RuntimeError, OSError, subprocess.SubprocessError) as err:
            _fail(result, err, servers.get(scenario.name))


def _runs(scenario: Scenario, workload: Workload) -> bool:
    return not workload.agent or scenario.name in AGENT_SCENARIOS


def _start(
    scenario: Scenario,
    ctx: Context,
    upstream: Served,
    servers: dict[str, Served],
    result: ScenarioResult,
    client_core: str | None,
    gateway_core: str | None,
    work_dir: Path,
) -> tuple[Target, int | None, str | None]:
    """(where to send load, the gateway's pid, the core the load generator runs on)."""
    if scenario.command is None:
        # no gateway: the load generator takes the gateway's core
        return Target(upstream.port, scenario.model, scenario.key), None, gateway_core
    if ctx.redis_url and scenario.needs_redis:
        _flush_redis(ctx.redis_url)
    port = free_port()
    argv, env = scenario.command(ctx if scenario.needs_redis else _no_redis(ctx), port)
    target = Target(port, scenario.model, scenario.key, polyroute=scenario.is_polyroute)
    server = start(
        scenario.name, argv, port=port, env=env, core=gateway_core, log_dir=work_dir,
        probe=(PATH, target.body(False), target.headers()),
    )
    servers[scenario.name] = server
    result.startup_s = server.startup_s
    time.sleep(1.0)
    result.rss_idle_mb = rss_mb(server.pid)
    return target, server.pid, client_core


def _load(
    results: dict[str, ScenarioResult],
    servers: dict[str, Served],
    targets: dict[str, tuple[Target, int | None, str | None]],
    scenario: Scenario,
    workload: Workload,
    concurrency: int,
    seconds: int,
    core: str | None,
    pid: int | None,
    round_no: int,
) -> None:
    """One wrk run, kept in the scenario's results (round -1: warm-up, not kept); a failure takes the scenario out."""
    target = targets[scenario.name][0]
    try:
        load = run_wrk(target, stream=workload.stream, concurrency=concurrency, seconds=seconds, core=core,
                       gateway_pid=pid, workload=workload, round_no=round_no)
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        _fail(results[scenario.name], err, servers.get(scenario.name))
        del targets[scenario.name]
        return
    _settle(scenario.name, targets[scenario.name][1])
    if round_no < 0:
        return
    results[scenario.name].loads.append(load)
    print(
        f"  {scenario.name:<16} {workload.name:<22} c={concurrency:<3} {load.rps:9.0f} req/s  "
        f"p50 {load.p50_ms:7.2f} ms  p99 {load.p99_ms:7.2f} ms  "
        f"CPU/req {load.cpu_us_per_req or 0:7.0f} us  non-2xx {load.non_2xx}"
        + (f"  (span exporter {load.exporter_us_per_req:.0f} us)" if load.exporter_us_per_req else ""),
        flush=True,
    )


def _settle(name: str, pid: int | None) -> None:
    """Let a gateway finish what the load generator left in flight before the next scenario's run: a gateway
    loaded past what it serves (LiteLLM's proxy at concurrency 64) works on for seconds after wrk stops, on the core
    the next gateway is measured on."""
    if pid is None:
        return
    took = wait_idle(pid)
    if took is None or took > 1.0:
        print(f"  {name}: busy for {'over 30' if took is None else f'{took:.1f}'} s after its run", flush=True)


def _fail(result: ScenarioResult, err: BaseException, server: Served | None) -> None:
    result.error = f"{type(err).__name__}: {err}"
    print(f"  {result.name} failed: {result.error}", flush=True)
    if server is not None:
        print(server.log.read_text()[-3000:], flush=True)


def run_streams(chosen: list[Scenario], plan: Plan, work_dir: Path) -> list[StreamsLevel]:
    """Long-lived streams from a slow upstream: at each level, every gateway in turn (the floor first)."""
    names = [s for s in chosen if s.name in AGENT_SCENARIOS]
    if not names:
        return []
    client_core, gateway_core = cores()
    port = free_port()
    slow = start(
        "slow-upstream",
        [sys.executable, "-m", "bench.upstream", "--port", str(port), "--interval-ms", str(plan.stream_interval_ms),
         "--tokens", str(plan.stream_tokens)],
        port=port, env={"PYTHONPATH": str(REPO)}, core=client_core, log_dir=work_dir, probe=None,
    )
    ctx = Context(upstream_url=f"http://{HOST}:{port}", redis_url=None, work_dir=work_dir)
    servers: dict[str, Served] = {}
    targets: dict[str, tuple[Target, int | None, str | None]] = {}
    levels: list[StreamsLevel] = []
    duration = plan.stream_tokens * plan.stream_interval_ms / 1000
    try:
        for scenario in names:
            try:
                targets[scenario.name] = _start(scenario, ctx, slow, servers, ScenarioResult(scenario.name, ""),
                                                client_core, gateway_core, work_dir)
            except (StartError, OSError, subprocess.SubprocessError) as err:
                print(f"  long streams: {scenario.name} failed to start: {err}", flush=True)
        print("bench: long-lived streams", flush=True)
        for streams in plan.stream_levels:
            for scenario in names:
                if scenario.name not in targets:
                    continue
                target, pid, _ = targets[scenario.name]
                argv = [sys.executable, "-m", "bench.longstreams", "--port", str(target.port), "--streams",
                        str(streams), "--model", target.model, "--key", target.key, "--duration", str(duration)]
                if pid is not None:
                    argv += ["--pid", str(pid)]
                if client_core is not None:
                    argv = ["taskset", "-c", client_core, *argv]
                done = subprocess.run(argv, capture_output=True, text=True, timeout=duration * 3 + 60, check=False,
                                      env={**os.environ, "PYTHONPATH": str(REPO)})
                line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_STREAMS ")), None)
                if done.returncode != 0 or line is None:
                    print(f"  long streams: {scenario.name} at {streams}: client failed: {done.stderr[-2000:]}",
                          flush=True)
                    levels.append(StreamsLevel(scenario.name, streams, 0, streams, 0, 0.0, 0.0, 0, None, 0.0))
                    continue
                level = StreamsLevel(scenario=scenario.name, streams=streams,
                                     **json.loads(line.removeprefix("BENCH_STREAMS ")))
                levels.append(level)
                print(
                    f"  {scenario.name:<16} {streams:5d} streams  gaps p50 {level.gap_p50_ms:6.2f} ms  "
                    f"p99 {level.gap_p99_ms:6.2f} ms  CPU/chunk {level.cpu_us_per_chunk or 0:6.1f} us "
                    f"(kernel {level.kernel_us_per_chunk or 0:4.1f})  "
                    f"failed {level.failed}",
                    flush=True,
                )
        return levels
    finally:
        for server in servers.values():
            server.stop()
        slow.stop()


def _leak_check(target: Target, plan: Plan, core: str | None, server: Served) -> list[tuple[int, float]]:
    """Send `plan.leak_requests` more requests (alternating non-stream and stream), sampling RSS after each run."""
    samples = [(0, rss_mb(server.pid))]
    done = 0
    deadline = time.monotonic() + plan.leak_max_s
    stream = False
    while done < plan.leak_requests and time.monotonic() < deadline:
        load = run_wrk(target, stream=stream, concurrency=16, seconds=10, core=core, gateway_pid=None)
        if load.non_2xx or load.socket_errors:
            raise RuntimeError(f"leak check: {load.non_2xx} non-2xx, {load.socket_errors} socket errors")
        done += load.requests
        samples.append((done, rss_mb(server.pid)))
        print(f"  leak check: {done:,} requests, RSS {samples[-1][1]:.1f} MiB", flush=True)
        stream = not stream
    return samples


def _no_redis(ctx: Context) -> Context:
    return Context(ctx.upstream_url, None, ctx.work_dir)


def _flush_redis(url: str) -> None:
    port = url.rsplit(":", 1)[1].split("/")[0]
    subprocess.run(["redis-cli", "-h", HOST, "-p", port, "flushall"], capture_output=True, timeout=10, check=False)


if __name__ == "__main__":
    sys.exit(main())
