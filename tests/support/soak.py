"""`scripts/soak`: two gateway replicas over Redis behind nginx, a mixed bounded workload with injected upstream faults,
a Redis restart and a policy reload every few minutes; fails on a lost or truncated response, an over-admission, or
growth of a replica's memory or open files. Not part of the test suite (it runs for minutes)."""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.nginx import start_nginx
from tests.support.processes import (
    GatewayProcess,
    RedisServer,
    Upstream,
    start_gateway,
    start_redis,
    start_simulated,
)
from tests.support.soak_load import (
    CAPPED_KEY,
    FAULTS,
    OK,
    SOAK_KEY,
    STREAM_ERROR,
    Clients,
    Outcome,
    capped_request,
    one_request,
)

CAPPED_RPM = 30
ADMIN_KEY = "soak-admin"
CLOUD_KEY = "sk-sim-cloud-soak"
WARMUP_S = 60.0  # memory and descriptors settle (pools, caches) before growth is judged
RSS_GROWTH_LIMIT = 0.10  # a replica's RSS in the last third of the run over the first third (after warm-up)
FD_GROWTH_LIMIT = 10
POLICY = """
version: 1
providers:
  modelstudio:
    type: openai
    base_url: {cloud}
    api_key: {cloud_key}
    hosting: cloud
    jurisdiction: sg
    vendor: alibaba
    protocols: [chat, responses, messages]
    base_urls: {{messages: {cloud_root}/apps/anthropic}}
  vllm: {{type: openai, base_url: {vllm}, hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  qwen-cloud: {{provider: modelstudio, model: qwen3.6-plus,
               price: {{input_per_mtok: 0.8, output_per_mtok: 4.8, currency: CNY}}}}
  qwen-local: {{provider: vllm, model: Qwen/Qwen3-32B, price: {{gpu_hour: 2.5, tokens_per_second: 1200}}}}
aliases:
  cloud-first: {{targets: [qwen-cloud, qwen-local]}}
  local-first: {{targets: [qwen-local, qwen-cloud]}}
fallback:
  retries: {{attempts: 1, backoff: {backoff}, max_backoff: 100ms}}
  timeouts: {{connect: 2s, first_token: 10s, total: 30s}}
  circuit_breaker: {{failures: 5, window: 10s, cooldown: 5s}}
tenants:
  soak: {{api_keys: ["{soak_key}"], budget: {{usd_per_day: 100000}}}}
  capped: {{api_keys: ["{capped_key}"], limits: {{rpm: {rpm}}}}}
"""


@dataclass
class Sample:
    at: float  # seconds since the start
    rss_kb: list[int]
    fds: list[int]


@dataclass
class Run:
    gateways: list[GatewayProcess]
    cloud: Upstream
    vllm: Upstream
    redis: RedisServer
    policy: Path
    nginx_url: str
    outcomes: list[Outcome] = field(default_factory=list)
    capped: list[Outcome] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    fault_log: list[dict[str, Any]] = field(default_factory=list)  # both upstreams' faults served, by time
    gateway_logs: list[str] = field(default_factory=list)  # each replica's output
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to run (default: 30)")
    parser.add_argument("--rate", type=float, default=12.0, help="requests per second, all threads (default: 12)")
    parser.add_argument("--threads", type=int, default=8, help="requests in flight at most (default: 8)")
    parser.add_argument(
        "--event-every",
        type=float,
        default=120.0,
        help="seconds between policy reloads, and between Redis restarts (half of it apart; default: 120)",
    )
    parser.add_argument(
        "--fault-every", type=float, default=15.0, help="seconds between injected upstream faults (default: 15)"
    )
    parser.add_argument(
        "--faults",
        default=",".join(sorted({f["fault"] for f in FAULTS})),
        help="the kinds of upstream faults injected, comma-separated (default: all of the soak's mix)",
    )
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args(argv)
    unknown = set(args.faults.split(",")) - {f["fault"] for f in FAULTS}
    if unknown:
        parser.error(f"--faults: not in the soak's mix: {', '.join(sorted(unknown))}")
    with ExitStack() as stack:
        run = _start(stack, Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="polyroute-soak-"))))
        print(
            f"soak: {args.minutes:g} min, {args.rate:g} req/s, {args.threads} in flight, nginx {run.nginx_url}, "
            f"replicas {[g.base_url for g in run.gateways]}",
            flush=True,
        )
        _drive(run, args)
        _collect(run)
    return _report(run, args.minutes * 60)


def _start(stack: ExitStack, work: Path) -> Run:
    cloud = start_simulated("modelstudio", name="soak-cloud", api_key=CLOUD_KEY, chunks=8)
    stack.callback(cloud.stop)
    vllm = start_simulated("vllm", name="soak-vllm", chunks=8)
    stack.callback(vllm.stop)
    # Persisted on every write, so that a restart keeps the windows and no limit is handed out twice.
    redis = start_redis(extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    stack.callback(redis.stop)
    policy = work / "policy.yaml"
    _write_policy(policy, cloud, vllm, backoff="10ms")
    env = {
        "POLYROUTE_REDIS_URL": redis.url,
        "POLYROUTE_ADMIN_KEY": ADMIN_KEY,
        "POLYROUTE_STATE_FAILURE_MODE": "closed",  # nothing is admitted unchecked while Redis restarts
        "POLYROUTE_LOG_LEVEL": "warning",
    }
    gateways = []
    for _ in range(2):
        gateway = start_gateway(policy, env=env)
        stack.callback(gateway.stop)
        gateways.append(gateway)
    nginx = start_nginx([g.port for g in gateways])
    stack.callback(nginx.stop)
    return Run(gateways, cloud, vllm, redis, policy, nginx.base_url)


def _write_policy(path: Path, cloud: Upstream, vllm: Upstream, *, backoff: str) -> None:
    path.write_text(
        POLICY.format(
            cloud=cloud.base_url,
            cloud_root=cloud.root_url,
            cloud_key=CLOUD_KEY,
            vllm=vllm.base_url,
            backoff=backoff,
            soak_key=SOAK_KEY,
            capped_key=CAPPED_KEY,
            rpm=CAPPED_RPM,
        )
    )


# --- the load, the probe of the capped tenant, the events ---


def _drive(run: Run, args: argparse.Namespace) -> None:
    threads = [threading.Thread(target=_load, args=(run, i, args), daemon=True) for i in range(args.threads)]
    threads.append(threading.Thread(target=_probe_capped, args=(run,), daemon=True))
    start = time.monotonic()
    end = start + args.minutes * 60
    for thread in threads:
        thread.start()
    rng = random.Random(args.seed)
    faults = [f for f in FAULTS if f["fault"] in args.faults.split(",")]
    next_sample = next_fault = next_print = start
    next_event, event_no = start + args.event_every / 2, 0
    while (now := time.monotonic()) < end:
        if now >= next_sample:
            run.samples.append(_sample(run, now - start))
            next_sample += 10.0
        if now >= next_fault:
            fault = rng.choice(faults)
            # The simulated Model Studio's native Messages and Responses streams do not simulate paced faults other
            # than in-band errors (they answer a 400): those go to the chat-only vLLM (whose streams polyroute
            # translates for Messages and Responses clients).
            paced = fault["fault"] in ("slow_first_token", "stall_mid_stream", "reset_mid_stream")
            (run.vllm if paced else rng.choice((run.cloud, run.vllm))).inject([fault])
            next_fault += args.fault_every
        if now >= next_event:
            _event(run, event_no, now - start)
            event_no += 1
            next_event += args.event_every / 2
        if now >= next_print:
            _progress(run, now - start)
            next_print += 60.0
        time.sleep(0.2)
    run.stop.set()
    for thread in threads:
        thread.join(timeout=90)
    run.samples.append(_sample(run, time.monotonic() - start))


def _load(run: Run, index: int, args: argparse.Namespace) -> None:
    rng = random.Random(args.seed * 1000 + index)
    clients = Clients(run.nginx_url)
    interval = args.threads / args.rate
    due = time.monotonic() + rng.random() * interval
    try:
        while not run.stop.is_set():
            time.sleep(max(0.0, due - time.monotonic()))
            due = max(due + interval, time.monotonic() - interval)  # bounded: never bursts to catch up
            outcome = one_request(clients, rng, rng.choice(("cloud-first", "local-first")))
            with run.lock:
                run.outcomes.append(outcome)
    except BaseException as err:  # an answer no check foresaw: the soak's load thinned out, which must not pass
        run.events.append(f"load thread {index} died: {err!r}"[:300])
        raise
    finally:
        clients.close()


def _probe_capped(run: Run) -> None:
    """Twice the capped tenant's limit, one request at a time: what it admits must fit its limit in every minute."""
    clients = Clients(run.nginx_url, key=CAPPED_KEY)
    try:
        while not run.stop.wait(60.0 / (CAPPED_RPM * 2)):
            outcome = capped_request(clients, "local-first")
            with run.lock:
                run.capped.append(outcome)
    finally:
        clients.close()


def _event(run: Run, number: int, at: float) -> None:
    if number % 2 == 0:
        _write_policy(run.policy, run.cloud, run.vllm, backoff="20ms" if number % 4 == 0 else "10ms")
        results = [_reload(g) for g in run.gateways]
        run.events.append(f"{at:6.0f}s policy reload: {results}")
    else:
        began = time.monotonic()
        run.redis.restart()
        run.events.append(f"{at:6.0f}s redis restart: down {time.monotonic() - began:.1f}s")
    print(f"  event {run.events[-1].strip()}", flush=True)


def _reload(gateway: GatewayProcess) -> int:
    request = urllib.request.Request(
        gateway.url("/admin/reload"), method="POST", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        err.close()
        return err.code


def _collect(run: Run) -> None:
    """What the upstreams and the replicas recorded, read before they stop: evidence for any failed check."""
    for upstream in (run.cloud, run.vllm):
        run.fault_log += [{**entry, "upstream": upstream.name} for entry in upstream.stats()["fault_log"]]
    run.fault_log.sort(key=lambda entry: float(entry["at"]))
    run.gateway_logs = [gateway.logs() for gateway in run.gateways]


def _sample(run: Run, at: float) -> Sample:
    pids = [g.process.pid for g in run.gateways]
    return Sample(at, [_rss_kb(pid) for pid in pids], [len(os.listdir(f"/proc/{pid}/fd")) for pid in pids])


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _progress(run: Run, at: float) -> None:
    with run.lock:
        results = Counter(o.result for o in run.outcomes)
    last = run.samples[-1]
    memory = "/".join(f"{kb / 1024:.0f}" for kb in last.rss_kb)
    fds = "/".join(str(n) for n in last.fds)
    print(
        f"  {at:6.0f}s  requests {sum(results.values()):6d}  {dict(sorted(results.items()))}  "
        f"rss MB {memory}  fds {fds}",
        flush=True,
    )


# --- the verdict ---


def _report(run: Run, seconds: float) -> int:
    results = Counter(o.result for o in run.outcomes)
    by_kind = Counter((o.kind, o.result) for o in run.outcomes)
    print("\n== soak summary")
    print(f"requests: {len(run.outcomes)} in {seconds / 60:.1f} min; outcomes: {dict(sorted(results.items()))}")
    for kind in sorted({k for k, _ in by_kind}):
        print(f"  {kind:17s} " + ", ".join(f"{r} {n}" for (k, r), n in sorted(by_kind.items()) if k == kind))
    failed = [o for o in run.outcomes if is_failure(o)]
    for o in failed[:10]:
        print(f"  {o.result}: {o.kind} at {time.strftime('%H:%M:%S', time.gmtime(o.sent))} request {o.request_id} "
              f"{o.detail}")
        for line in _evidence_lines(run, o):
            print(f"    {line}")
    if failed:
        print(f"evidence of every failed check: {_write_evidence(run, failed)}")
    errors = Counter(f"{o.result} {o.kind}: {o.detail}" for o in run.outcomes if o.result.startswith("http_"))
    for text, n in errors.most_common(8):
        print(f"  {n:4d} x {text}")
    capped = Counter(o.result for o in run.capped)
    print(f"capped tenant (rpm {CAPPED_RPM}): {dict(sorted(capped.items()))}; "
          f"over-admissions: {over_admissions(run.capped)}")
    print(f"faults served: {dict(Counter(str(e['fault']) for e in run.fault_log).most_common())}")
    print("events:\n" + "\n".join(f"  {e}" for e in run.events))
    print("replicas over time (RSS MB / open fds):")
    for s in run.samples[:: max(1, len(run.samples) // 20)]:
        print(
            f"  {s.at:6.0f}s  " + "  ".join(f"{kb / 1024:6.1f} / {n:3d}" for kb, n in zip(s.rss_kb, s.fds, strict=True))
        )
    lines, _ = growth(run.samples)
    print("\n".join(lines))
    problems = verdict(run.outcomes, run.capped, run.samples, run.events)
    print("verdict: " + ("PASS" if not problems else "FAIL: " + "; ".join(problems)))
    return 1 if problems else 0


def is_failure(outcome: Outcome) -> bool:
    """A response lost, or a 200 that is not a complete answer: anything but a success or an error the client's
    protocol carries (an HTTP error status, or a stream's error event)."""
    return not (outcome.result in (OK, STREAM_ERROR) or outcome.result.startswith("http_"))


def verdict(outcomes: list[Outcome], capped: list[Outcome], samples: list[Sample], events: list[str]) -> list[str]:
    """What fails the soak: any lost or truncated response, any over-admission, a failed reload, any growth."""
    problems = []
    failed = sum(1 for o in outcomes if is_failure(o))
    if failed:
        problems.append(f"{failed} lost or truncated responses")
    over = over_admissions(capped)
    if over:
        problems.append(f"{over} over-admissions of the capped tenant")
    if any(_reload_failed(e) for e in events):
        problems.append("a policy reload failed")
    if any("died" in e for e in events):
        problems.append("a load thread died")
    return problems + growth(samples)[1]


def _reload_failed(event: str) -> bool:
    """Whether a `policy reload: [status, ...]` event has a status other than 200 (on any replica)."""
    if "policy reload: [" not in event:
        return False
    statuses = event.rsplit("[", 1)[1].rstrip("]").split(",")
    return any(status.strip() != "200" for status in statuses)


def _evidence_lines(run: Run, outcome: Outcome) -> list[str]:
    """The raw answer, the faults the upstreams served for this request (or near its time when none matched by
    request id), and the replicas' log lines that name it."""
    lines = [f"answer: {outcome.evidence}"] if outcome.evidence else []
    matched = [e for e in run.fault_log if outcome.request_id and e.get("request_id") == outcome.request_id]
    near = matched or [e for e in run.fault_log if outcome.sent - 2 <= float(e["at"]) <= outcome.received + 1]
    label = "upstream faults for this request" if matched else "upstream faults near its time"
    lines += [f"{label}: {json.dumps(e)}" for e in near[:6]]
    for replica, logs in enumerate(run.gateway_logs, 1):
        named = [line for line in logs.splitlines() if outcome.request_id and outcome.request_id in line]
        lines += [f"replica {replica} log: {line}" for line in named[:4]]
    return lines


def _write_evidence(run: Run, failed: list[Outcome]) -> Path:
    """One JSON line per failed check, kept after the run's directory is gone."""
    path = Path(tempfile.gettempdir()) / f"polyroute-soak-{time.strftime('%Y%m%dT%H%M%S')}.evidence.jsonl"
    with path.open("w") as out:
        for o in failed:
            out.write(json.dumps({**o.__dict__, "trace": _evidence_lines(run, o)}) + "\n")
    return path


def over_admissions(capped: list[Outcome]) -> int:
    """Admitted requests that make some 60-second span hold more than the limit, for sure (whatever the exact moment
    of admission between sending and receiving)."""
    admitted = sorted((o for o in capped if o.result == OK), key=lambda o: o.sent)
    return sum(
        1 for i in range(len(admitted) - CAPPED_RPM) if admitted[i + CAPPED_RPM].sent - admitted[i].received < 60.0
    )


def growth(samples: list[Sample]) -> tuple[list[str], list[str]]:
    """(report lines, problems): a replica's RSS or open files in the last third of the run (after warm-up) above
    the first third by more than the tolerance."""
    settled = [s for s in samples if s.at >= WARMUP_S]
    if len(settled) < 6:
        return ["growth: not judged (it needs at least 2 minutes)"], []
    third = len(settled) // 3
    lines, problems = [], []
    for replica in range(len(settled[0].rss_kb)):
        rss_first = statistics.median(s.rss_kb[replica] for s in settled[:third])
        rss_last = statistics.median(s.rss_kb[replica] for s in settled[-third:])
        fds_first = statistics.median(s.fds[replica] for s in settled[:third])
        fds_last = statistics.median(s.fds[replica] for s in settled[-third:])
        lines.append(
            f"replica {replica + 1}: RSS {rss_first / 1024:.1f} -> {rss_last / 1024:.1f} MB, "
            f"fds {fds_first:.0f} -> {fds_last:.0f} (first third after warm-up -> last third)"
        )
        if rss_last > rss_first * (1 + RSS_GROWTH_LIMIT):
            problems.append(f"replica {replica + 1} RSS grew {rss_last / rss_first - 1:.0%}")
        if fds_last > fds_first + FD_GROWTH_LIMIT:
            problems.append(f"replica {replica + 1} open files grew by {fds_last - fds_first:.0f}")
    return lines, problems


if __name__ == "__main__":
    sys.exit(main())
