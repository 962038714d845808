"""The benchmark run: start the upstream (and Redis), then each scenario in turn, load it, measure it, report.

Run it through `bench/run`, which installs what is missing first. `python -m bench.harness --help` lists options.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import report
from bench.measure import PATH, Latencies, LoadResult, Target, measure_sequential, run_wrk
from bench.procs import HOST, Served, StartError, cores, free_port, rss_mb, start
from bench.scenarios import ALL, BENCH, REPO, Context, Scenario


@dataclass(frozen=True)
class Plan:
    """How long and how hard: the full run or the CI smoke run."""

    seconds: int
    warmup_s: int
    concurrency: tuple[int, ...]
    sequential: int
    leak_requests: int = 0
    leak_max_s: int = 300


FULL = Plan(seconds=8, warmup_s=2, concurrency=(1, 16, 64), sequential=300)
SMOKE = Plan(seconds=1, warmup_s=1, concurrency=(1, 16, 64), sequential=20)


@dataclass
class ScenarioResult:
    name: str
    title: str
    startup_s: float | None = None
    rss_idle_mb: float | None = None
    rss_after_mb: float | None = None
    loads: list[LoadResult] = field(default_factory=list)
    ttft: Latencies | None = None
    plain: Latencies | None = None
    leak: list[tuple[int, float]] | None = None  # (requests so far, RSS MiB)
    error: str | None = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description="polyroute against its baselines, one machine.")
    parser.add_argument("--smoke", action="store_true", help="a few seconds per scenario (CI); not for numbers")
    parser.add_argument("--skip-litellm", action="store_true", help="leave out LiteLLM's proxy")
    parser.add_argument("--long", action="store_true", help="also the leak check: 200,000 requests to polyroute")
    parser.add_argument(
        "--only", help="comma list of scenarios (direct,passthrough,litellm,polyroute,polyroute-sqlite,polyroute-redis)"
    )
    parser.add_argument("--seconds", type=int, help="override the seconds per load run")
    parser.add_argument("--out", type=Path, help="where to write the report (default: bench/results, smoke: bench/out)")
    args = parser.parse_args(argv)

    plan = SMOKE if args.smoke else FULL
    if args.seconds:
        plan = Plan(args.seconds, plan.warmup_s, plan.concurrency, plan.sequential)
    if args.long:
        plan = Plan(plan.seconds, plan.warmup_s, plan.concurrency, plan.sequential, leak_requests=200_000)
    chosen = [s for s in ALL if not (args.skip_litellm and s.name == "litellm")]
    if args.only:
        wanted = {w.strip() for w in args.only.split(",")}
        unknown = wanted - {s.name for s in ALL}
        if unknown:
            parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
        chosen = [s for s in chosen if s.name in wanted]

    began = time.monotonic()
    stamp = dt.datetime.now(dt.UTC)
    work_dir = Path(tempfile.mkdtemp(prefix="polyroute-bench-"))
    results = run(chosen, plan, work_dir)
    elapsed = time.monotonic() - began

    partial = args.smoke or args.only or args.seconds
    out_dir = args.out or (BENCH / "out" if partial else BENCH / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    name = ("smoke-" if args.smoke else "") + stamp.strftime("%Y%m%dT%H%M%SZ")
    text = report.render(results, plan_text(plan, args), stamp, elapsed, smoke=args.smoke)
    md = out_dir / f"{name}.md"
    md.write_text(text)
    (out_dir / f"{name}.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    if not partial and args.out is None:
        shutil.copyfile(md, BENCH / "RESULTS.md")
        print(f"bench: copied the table to {BENCH / 'RESULTS.md'}")
    print(text)
    print(f"bench: wrote {md} in {elapsed:.0f}s")
    shutil.rmtree(work_dir, ignore_errors=True)
    return 1 if any(r.error for r in results) else 0


def plan_text(plan: Plan, args: argparse.Namespace) -> str:
    mode = "smoke" if args.smoke else "full"
    extra = f", leak check {plan.leak_requests:,} requests" if plan.leak_requests else ""
    return (
        f"{mode} run: {plan.seconds}s per load run after {plan.warmup_s}s warm-up, concurrency "
        f"{', '.join(map(str, plan.concurrency))}, {plan.sequential} sequential requests for TTFT{extra}"
    )


def run(chosen: list[Scenario], plan: Plan, work_dir: Path) -> list[ScenarioResult]:
    client_core, gateway_core = cores()
    upstream_port = free_port()
    upstream = start(
        "upstream", [sys.executable, "-m", "bench.upstream", "--port", str(upstream_port)],
        port=upstream_port, env={"PYTHONPATH": str(REPO)}, core=client_core, log_dir=work_dir, probe=None,
    )
    redis: Served | None = None
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
        results = []
        for scenario in chosen:
            print(f"bench: {scenario.name} ...", flush=True)
            results.append(_one(scenario, ctx, plan, upstream, client_core, gateway_core, work_dir))
        return results
    finally:
        if redis is not None:
            redis.stop()
        upstream.stop()


def _one(
    scenario: Scenario,
    ctx: Context,
    plan: Plan,
    upstream: Served,
    client_core: str | None,
    gateway_core: str | None,
    work_dir: Path,
) -> ScenarioResult:
    result = ScenarioResult(scenario.name, scenario.title)
    server: Served | None = None
    try:
        if scenario.command is None:
            target = Target(upstream.port, scenario.model, scenario.key)
            load_core = gateway_core  # no gateway: the load generator takes the gateway's core
            pid = None
        else:
            if ctx.redis_url and scenario.needs_redis:
                _flush_redis(ctx.redis_url)
            port = free_port()
            argv, env = scenario.command(ctx if scenario.needs_redis else _no_redis(ctx), port)
            target = Target(port, scenario.model, scenario.key)
            server = start(
                scenario.name, argv, port=port, env=env, core=gateway_core, log_dir=work_dir,
                probe=(PATH, target.body(False), target.headers()),
            )
            result.startup_s = server.startup_s
            time.sleep(1.0)
            result.rss_idle_mb = rss_mb(server.pid)
            load_core = client_core
            pid = server.pid
        for stream in (False, True):
            run_wrk(target, stream=stream, concurrency=16, seconds=plan.warmup_s, core=load_core, gateway_pid=None)
            for concurrency in plan.concurrency:
                load = run_wrk(
                    target, stream=stream, concurrency=concurrency, seconds=plan.seconds, core=load_core,
                    gateway_pid=pid,
                )
                result.loads.append(load)
                print(
                    f"  {'stream' if stream else 'json  '} c={concurrency:<3} {load.rps:9.0f} req/s  "
                    f"p50 {load.p50_ms:7.2f} ms  p99 {load.p99_ms:7.2f} ms  non-2xx {load.non_2xx}",
                    flush=True,
                )
        result.plain = measure_sequential(target, stream=False, count=plan.sequential)
        result.ttft = measure_sequential(target, stream=True, count=plan.sequential)
        if server is not None:
            result.rss_after_mb = rss_mb(server.pid)
            if plan.leak_requests and scenario.name == "polyroute":
                result.leak = _leak_check(target, plan, client_core, server)
    except (StartError, RuntimeError, OSError, subprocess.SubprocessError) as err:
        result.error = f"{type(err).__name__}: {err}"
        print(f"  failed: {result.error}", flush=True)
        if server is not None:
            print(server.log.read_text()[-3000:], flush=True)
    finally:
        if server is not None:
            server.stop()
    return result


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
