"""How long `polyroute drill` takes to replay 100,000 recorded requests: `python -m bench.drill_replay [N]`.

Every record is a distinct routing fact (the worst case: identical facts are replayed once), over four aliases,
three tenants, three data classes and prompt sizes up to 60,000 tokens, against policies/demo.yaml's shape with a
third vendor. Prints the replay time; DESIGN's bound is 10 s for 100,000 records.
"""

from __future__ import annotations

import random
import sys
import time

from gateway.policy.loader import load_policy_text
from gateway.policy.pricing import CurrencyRates
from gateway.portability.drill import vendor_drill
from gateway.portability.lockin import lockin_report
from gateway.state.base import RoutingFactRow, RoutingFacts, UsageRow

POLICY = """
version: 1
providers:
  cloud: {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: cloud, jurisdiction: sg, vendor: alibaba}
  gpu: {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: self_hosted, jurisdiction: onprem, vendor: self}
  anth: {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: cloud, jurisdiction: us, vendor: anthropic}
deployments:
  qwen-plus: {provider: cloud, model: qwen3.6-plus, context_window: 1000000,
              price: {input_per_mtok: 0.8, output_per_mtok: 4.8, currency: CNY}}
  qwen-local: {provider: gpu, model: qwen3-32b, context_window: 32768, price: {gpu_hour: 2.5, tokens_per_second: 1200}}
  son: {provider: anth, model: claude-sonnet, context_window: 200000,
        price: {input_per_mtok: 3, output_per_mtok: 15, currency: USD}}
aliases:
  coder: {targets: [qwen-plus, qwen-local], critical: true}
  chat: {targets: [qwen-plus, son, qwen-local], strategy: lowest_cost}
  default: {targets: [qwen-local, qwen-plus], strategy: weighted, weights: [3, 1]}
  solo: {targets: [qwen-plus]}
rules:
  - {name: pii-stays-home, when: {data_class: [pii]}, require: {hosting: self_hosted}}
  - {name: long-prompts, when: {prompt_tokens: {gt: 30000}}, require: {min_context_window: 100000}}
  - {name: team-b-not-us, when: {tenant: [team-b]}, require: {jurisdiction_not: [us]}}
"""


def records(n: int) -> RoutingFacts:
    rng = random.Random(15)
    aliases, tenants = ["coder", "chat", "default", "solo"], ["team-a", "team-b", "team-c"]
    classes = [None, "pii", "internal"]
    deployments = ["qwen-plus", "qwen-local", "son"]
    rows = tuple(
        RoutingFactRow(
            day="2026-12-06", alias=rng.choice(aliases), tenant=rng.choice(tenants), deployment=rng.choice(deployments),
            endpoint="chat", stream=rng.random() < 0.5, data_class=rng.choice(classes), tags=(),
            prompt_tokens=i % 60_000 + 1, max_output_tokens=None, needs=(), params=(), requests=1,
            input_tokens=i % 60_000 + 1, output_tokens=200,
        )
        for i in range(n)
    )
    return RoutingFacts(rows)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    table = load_policy_text(POLICY, {}, fx=CurrencyRates(usd_per_cny=0.14, usd_per_eur=1.08))
    facts = records(n)
    usage = [UsageRow("2026-12-06", "t", "a", d, "p", "v", "cloud", "sg", requests=10, latency_s_sum=5.0)
             for d in ("qwen-plus", "qwen-local", "son")]
    started = time.perf_counter()
    report = vendor_drill(table, usage, facts, without="alibaba")
    drill_s = time.perf_counter() - started
    started = time.perf_counter()
    lockin_report(table, usage, facts)
    lockin_s = time.perf_counter() - started
    print(f"{n} distinct records: drill {drill_s:.2f} s ({report['refused']} refused), lock-in report {lockin_s:.2f} s")


if __name__ == "__main__":
    main()
