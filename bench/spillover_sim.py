"""Spill-over placement, simulated faster than real time: polyroute's own routing code over a capacity model.

Each request is placed by `gateway.policy.engine.decide` (the function the server runs) with the load snapshot a
poller would have read (every 250 ms: waiting, running, KV use, and the slots `gateway.load.signals.learn_slots`
learns from them), the requests placed since that read (counted as `gateway.load.placement` counts them), and the
tier state moved by `gateway.load.hysteresis.TierHysteresis`. What is simulated is only the world around it:

- two local replicas of one self-hosted model, each with a fixed number of slots (continuous batching), a prefill
  rate, a decode rate, a KV-cache capacity in tokens and a prefix cache (LRU of conversations): a hit prefills only
  the turn's new tokens, so time to first token drops;
- one cloud deployment with a price per token (cached input cheaper), a time to first token and no queue;
- a bursty multi-turn agent trace: conversations arrive as a Poisson stream whose rate triples during bursts, each has
  several turns with think time between them, and each turn's prompt grows by the previous turn.

Cost = GPU hours of the local replicas for the whole run (when a strategy uses them) + cloud tokens.

    .venv/bin/python -m bench.spillover_sim              # prints the table (about 10 s)
    .venv/bin/python -m bench.spillover_sim --write      # and writes it into bench/RESULTS.md under its own heading
"""

from __future__ import annotations

import argparse
import heapq
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from gateway.load.hysteresis import TierHysteresis
from gateway.load.signals import EngineReading, learn_slots
from gateway.policy.engine import decide
from gateway.policy.loader import load_policy_text
from gateway.policy.plan import EngineLoad, HealthSnapshot, LoadSnapshot, RequestFacts
from gateway.policy.pricing import CurrencyRates
from gateway.policy.table import PolicyTable

# --- the scenario -----------------------------------------------------------------------------------------------
DURATION_S = 3600.0
POLL_S = 0.25
SLOTS = 8  # per replica
PREFILL_TOK_S = 16000.0  # per request
DECODE_TOK_S = 40.0  # per request
KV_TOKENS = 128_000  # per replica
PREFIX_CACHE_CONVERSATIONS = 16  # per replica
GPU_HOUR_USD = 2.50  # per replica
CLOUD_TTFT_S = 0.9
CLOUD_PREFILL_TOK_S = 40_000.0
CLOUD_DECODE_TOK_S = 80.0
CLOUD_INPUT, CLOUD_CACHED, CLOUD_OUTPUT = 0.80, 0.16, 3.20  # USD per million tokens
BASE_RATE, BURST_FACTOR = 0.26, 2.5
BURST_EVERY_S, BURST_FOR_S = 600.0, 180.0
TURNS = (4, 12)
THINK_S = 8.0  # mean think time between turns
SYSTEM_TOKENS, TURN_TOKENS, OUTPUT_TOKENS = 3000, 600, 250
SLO_TTFT_P95_S = 3.0

# Two sets of marks for the same alias: one for time to first token (no request waits on the local replicas: each
# one they could not start at once goes to the cloud), one for filling the GPUs (a request may wait behind one other).
SPILL_LATENCY = "{high: {queue: 0}, low: {queue: 0}, dwell: 60s}"
SPILL_FILL = "{high: {queue: 1}, low: {queue: 0.5}, dwell: 60s}"

POLICY = """
version: 1
providers:
  gpu-a: {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: self_hosted, jurisdiction: onprem, vendor: self}
  gpu-b: {type: openai, base_url: "http://127.0.0.1:10/v1", hosting: self_hosted, jurisdiction: onprem, vendor: self}
  cloud: {type: openai, base_url: "http://127.0.0.1:11/v1", hosting: cloud, jurisdiction: sg, vendor: alibaba}
deployments:
  local-a: {provider: gpu-a, model: m, price: {input_per_mtok: 0, output_per_mtok: 0}}
  local-b: {provider: gpu-b, model: m, price: {input_per_mtok: 0, output_per_mtok: 0}}
  cloud:   {provider: cloud, model: m, price: {input_per_mtok: 0.8, output_per_mtok: 3.2}}
aliases:
  spill-latency: {targets: [local-a, local-b, cloud], strategy: spillover, spillover: SPILL_LATENCY}
  spill-fill: {targets: [local-a, local-b, cloud], strategy: spillover, spillover: SPILL_FILL}
  priority:   {targets: [local-a, local-b], strategy: priority}
  cloud-only: {targets: [cloud], strategy: priority}
  weighted:   {targets: [local-a, local-b, cloud], strategy: weighted, weights: [2, 2, 1]}
  least_busy: {targets: [local-a, local-b, cloud], strategy: least_busy}
"""
LOCAL = ("local-a", "local-b")


@dataclass
class Request:
    conversation: int
    turn: int
    turns: int
    arrived: float
    prompt: int
    sent_at_read: int | None = None  # counted in the snapshot's `sent` at this read generation


@dataclass
class Replica:
    running: list[tuple[float, int]] = field(default_factory=list)  # (finish time, KV tokens)
    queue: list[Request] = field(default_factory=list)
    cache: OrderedDict[int, None] = field(default_factory=OrderedDict)
    busy_slot_s: float = 0.0


@dataclass
class Result:
    name: str
    requests: int = 0
    ttft: list[float] = field(default_factory=list)
    cost_usd: float = 0.0
    local_requests: int = 0
    cache_hits: int = 0
    transitions: int = 0
    utilisation: float = 0.0

    def p95(self) -> float:
        ttft = sorted(self.ttft)
        return ttft[int(0.95 * (len(ttft) - 1))]

    def hit_rate(self) -> float:
        return self.cache_hits / self.local_requests if self.local_requests else 0.0

    def row(self) -> str:
        p95, hit = self.p95(), self.hit_rate()
        return (
            f"| {self.name} | {self.requests:,} | {1000 * self.cost_usd / self.requests:.2f} | {p95:.2f} | "
            f"{'yes' if p95 <= SLO_TTFT_P95_S else 'no'} | {100 * self.utilisation:.0f}% | "
            f"{self.transitions / (DURATION_S / 60):.2f} | {100 * hit:.0f}% |"
        )


class Simulation:
    """One strategy over the whole trace (same seed for every strategy: the same conversations arrive)."""

    def __init__(self, table: PolicyTable, alias: str, name: str, *, affinity: bool, seed: int) -> None:
        self.table, self.alias, self.affinity = table, alias, affinity
        self.result = Result(name)
        self.rng = random.Random(seed)
        self.route_rng = random.Random(seed + 1)
        self.replicas = {name: Replica() for name in LOCAL}
        self.inflight = {name: 0 for name in (*LOCAL, "cloud")}
        self.cloud_seen: set[int] = set()
        self.events: list[tuple[float, int, str, object]] = []
        self.serial = 0
        self.snapshot = LoadSnapshot()
        self.hysteresis = TierHysteresis()
        self.slots: dict[str, float | None] = {name: None for name in LOCAL}  # as a poller learns them
        self.sent: dict[str, int] = {}  # placed since the last read and not ended, as LoadTracker counts them
        self.reads = 0  # the read generation (LoadTracker._generation): a request ending after a read is not taken back
        self.uses_local = any(t in LOCAL for t in table.aliases[alias].targets)

    def push(self, at: float, kind: str, payload: object = None) -> None:
        self.serial += 1
        heapq.heappush(self.events, (at, self.serial, kind, payload))

    def run(self) -> Result:
        t, conversation = 0.0, 0
        while t < DURATION_S:  # the conversations' arrivals, drawn up front
            burst = (t % BURST_EVERY_S) >= BURST_EVERY_S - BURST_FOR_S
            t += self.rng.expovariate(BASE_RATE * (BURST_FACTOR if burst else 1.0))
            turns = self.rng.randint(*TURNS)
            self.push(t, "arrive", Request(conversation, 0, turns, t, SYSTEM_TOKENS + TURN_TOKENS))
            conversation += 1
        self.push(0.0, "tick")
        while self.events:
            now, _, kind, payload = heapq.heappop(self.events)
            if now > DURATION_S and kind == "tick":
                continue
            if kind == "tick":
                self.tick(now)
            elif kind == "arrive" and isinstance(payload, Request):
                self.arrive(now, payload)
            elif kind == "finish" and isinstance(payload, tuple):
                self.finish(now, *payload)
        slot_s = len(LOCAL) * SLOTS * DURATION_S
        self.result.utilisation = sum(r.busy_slot_s for r in self.replicas.values()) / slot_s
        if self.uses_local:
            self.result.cost_usd += len(LOCAL) * GPU_HOUR_USD * DURATION_S / 3600
        return self.result

    def tick(self, now: float) -> None:
        """What the pollers would read now, and the tier state the load tracker would move."""
        engines = {}
        for name, r in self.replicas.items():
            reading = EngineReading(
                queue=len(r.queue), running=len(r.running), kv=min(1.0, sum(kv for _, kv in r.running) / KV_TOKENS)
            )
            self.slots[name] = learn_slots(self.slots[name], reading)
            engines[name] = EngineLoad(
                queue=reading.queue,
                running=reading.running,
                kv=reading.kv,
                source="vllm",
                age_s=0.0,
                slots=self.slots[name],
            )
        alias = self.table.aliases[self.alias]
        aliases = {}
        if alias.tiers:
            before = self.hysteresis.active_tier
            aliases[self.alias] = self.hysteresis.step(alias, engines, now)
            self.result.transitions += int(aliases[self.alias].active_tier != before)
        self.sent.clear()  # a new reading shows what was placed before it (LoadTracker._read)
        self.reads += 1
        self.snapshot = LoadSnapshot(engines=engines, aliases=aliases, sent=self.sent)
        self.push(now + POLL_S, "tick")

    def arrive(self, now: float, request: Request) -> None:
        facts = RequestFacts(
            alias=self.alias,
            tenant="bench",
            prompt_tokens=request.prompt,
            max_output_tokens=OUTPUT_TOKENS,
            session=f"s:{request.conversation}" if self.affinity else None,
        )
        health = HealthSnapshot(inflight=self.inflight, random_seed=self.route_rng.random())
        plan = decide(facts, self.table, health, self.snapshot)
        target = plan.attempts[0].name
        if plan.strategy == "spillover" and target in self.snapshot.engines:  # as gateway.load.placement does
            self.sent[target] = self.sent.get(target, 0) + 1
            request.sent_at_read = self.reads
        self.result.requests += 1
        self.inflight[target] += 1
        if target == "cloud":
            cached = request.conversation in self.cloud_seen
            self.cloud_seen.add(request.conversation)
            new = TURN_TOKENS if cached else request.prompt
            ttft = CLOUD_TTFT_S + new / CLOUD_PREFILL_TOK_S
            self.result.ttft.append(ttft)
            price = (request.prompt - new) * CLOUD_CACHED + new * CLOUD_INPUT + OUTPUT_TOKENS * CLOUD_OUTPUT
            self.result.cost_usd += price / 1e6
            self.push(now + ttft + OUTPUT_TOKENS / CLOUD_DECODE_TOK_S, "finish", (target, request))
            return
        replica = self.replicas[target]
        replica.queue.append(request)
        self.start_waiting(now, target)

    def start_waiting(self, now: float, name: str) -> None:
        replica = self.replicas[name]
        while replica.queue and len(replica.running) < SLOTS:
            request = replica.queue.pop(0)
            hit = request.conversation in replica.cache
            if hit:
                replica.cache.move_to_end(request.conversation)
            replica.cache[request.conversation] = None
            while len(replica.cache) > PREFIX_CACHE_CONVERSATIONS:
                replica.cache.popitem(last=False)
            new = TURN_TOKENS if hit else request.prompt
            prefill = new / PREFILL_TOK_S
            done = now + prefill + OUTPUT_TOKENS / DECODE_TOK_S
            replica.running.append((done, request.prompt + OUTPUT_TOKENS))
            replica.busy_slot_s += min(done, DURATION_S) - min(now, DURATION_S)
            self.result.ttft.append(now + prefill - request.arrived)
            self.result.local_requests += 1
            self.result.cache_hits += int(hit)
            self.push(done, "finish", (name, request))

    def finish(self, now: float, name: str, request: Request) -> None:
        self.inflight[name] -= 1
        if request.sent_at_read == self.reads and self.sent.get(name, 0) > 0:  # LoadTracker.done
            self.sent[name] -= 1
        if name in self.replicas:
            replica = self.replicas[name]
            replica.running = [(done, kv) for done, kv in replica.running if done > now]
            self.start_waiting(now, name)
        if request.turn + 1 < request.turns:
            think = self.rng.expovariate(1 / THINK_S)
            prompt = request.prompt + OUTPUT_TOKENS + TURN_TOKENS
            turn = Request(request.conversation, request.turn + 1, request.turns, now + think, prompt)
            self.push(now + think, "arrive", turn)


WHY = (
    "What makes the p95: before placement counted requests between polls, the slowest 5% of the latency-marks run "
    "were local requests that waited in a replica's queue (363 cache misses and 135 hits of 510; 12 were the cloud), "
    "nearly all sent while the alias was spilled, to a first tier that had looked idle at the last poll: the signal "
    "said no request was waiting, but every slot was busy or polyroute had sent a burst since. Placement now counts "
    "the requests it placed since each read and the slots it learned from the readings, so a request the replicas "
    "could not start at once goes to the cloud (`high: {queue: 0}`), and the tier state stays put. Now the slowest "
    "5% are cloud prompt-cache misses (a conversation's first turn there: the cloud's own time to first token), as "
    "in the cloud-only run. Measured when this changed (seed 16): the same `high: {queue: 0}` marks without the "
    "counting gave a p95 of 1.19 s; the earlier latency marks `high: {queue: 0.5}` (one request per two replicas "
    "may wait) give 1.10 s with it (`--latency '{high: {queue: 0.5}, low: {queue: 0}, dwell: 60s}'`)."
)
HEADING = "## Spill-over placement (issue 16; simulated capacity model, `python -m bench.spillover_sim`)"
COLUMNS = (
    "| strategy | requests | USD per 1,000 requests | p95 TTFT s | p95 within SLO | local utilisation "
    "| spill transitions per minute | local prefix-cache hits |\n|---|---:|---:|---:|---|---:|---:|---:|"
)


def report(seed: int, latency: str = SPILL_LATENCY, fill: str = SPILL_FILL) -> str:
    text = POLICY.replace("SPILL_LATENCY", latency).replace("SPILL_FILL", fill)
    table = load_policy_text(text, {}, fx=CurrencyRates())
    runs = [
        ("spillover, latency marks, session affinity", "spill-latency", True),
        ("spillover, latency marks, no affinity key", "spill-latency", False),
        ("spillover, fill marks, session affinity", "spill-fill", True),
        ("spillover, fill marks, no affinity key", "spill-fill", False),
        ("priority, local only", "priority", True),
        ("cloud only", "cloud-only", True),
        ("weighted 2:2:1", "weighted", True),
        ("least_busy", "least_busy", True),
    ]
    results = [Simulation(table, alias, name, affinity=aff, seed=seed).run() for name, alias, aff in runs]
    rows = [r.row() for r in results]
    lat, lat_random, filled, _, _, cloud = results[:6]
    weighted = results[6]
    scenario = (
        f"{DURATION_S / 60:.0f} simulated minutes; 2 local replicas x {SLOTS} slots (prefill {PREFILL_TOK_S:.0f} tok/s,"
        f" decode {DECODE_TOK_S:.0f} tok/s per request, KV {KV_TOKENS:,} tokens, prefix cache of "
        f"{PREFIX_CACHE_CONVERSATIONS} conversations, ${GPU_HOUR_USD}/GPU-hour); cloud TTFT {CLOUD_TTFT_S}s, "
        f"${CLOUD_INPUT}/${CLOUD_CACHED}/${CLOUD_OUTPUT} per Mtok input/cached/output; conversations of "
        f"{TURNS[0]}-{TURNS[1]} turns arriving at {BASE_RATE}/s, x{BURST_FACTOR:g} for {BURST_FOR_S / 60:.0f} min "
        f"every {BURST_EVERY_S / 60:.0f} min; SLO: p95 TTFT <= {SLO_TTFT_P95_S}s. "
        f"Latency marks: `spillover: {latency}`; fill marks: `spillover: {fill}` "
        f"(KV marks at their defaults, 0.9 / 0.7); seed {seed}."
    )
    slower = lat.p95() / cloud.p95() - 1
    verdict = "met" if slower <= 0.10 else "missed"
    targets = (
        "Against the issue's targets: "
        f"latency marks cost {100 * (1 - lat.cost_usd / cloud.cost_usd):.0f}% less than cloud only "
        f"(target >= 30%) at a p95 TTFT {100 * slower:.0f}% above it (target <= 10%: {verdict}); "
        f"fill marks use the local GPUs {100 * filled.utilisation:.0f}% (target >= 80%) "
        f"with p95 {filled.p95():.2f}s (SLO {SLO_TTFT_P95_S}s); spill transitions per minute are in the table "
        "(target <= 1); session affinity raises the local "
        f"prefix-cache hit rate {lat.hit_rate() / lat_random.hit_rate():.1f}x over least-loaded placement without a "
        f"key and {lat.hit_rate() / weighted.hit_rate():.1f}x over weighted random placement (target >= 2x)."
    )
    return f"{HEADING}\n\n{scenario}\n\n{COLUMNS}\n" + "\n".join(rows) + f"\n\n{targets}\n\n{WHY}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--latency", default=SPILL_LATENCY, help="the first alias's `spillover:` block, as YAML")
    parser.add_argument("--fill", default=SPILL_FILL, help="the second alias's `spillover:` block, as YAML")
    parser.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    args = parser.parse_args()
    text = report(args.seed, args.latency, args.fill)
    print(text)
    if args.write:
        path = Path(__file__).with_name("RESULTS.md")
        current = path.read_text(encoding="utf-8")
        before, _, rest = current.partition(HEADING)
        after = rest.partition("\n## ")[2]  # the sections that follow this one stay as they are
        tail = f"\n## {after}" if after else ""
        path.write_text(f"{before.rstrip(chr(10))}\n\n{text}{tail}", encoding="utf-8")


if __name__ == "__main__":
    main()
