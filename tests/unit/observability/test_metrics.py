"""Tests of gateway.observability.metrics: what a Prometheus scrape of /metrics shows after the gateway's calls."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.error_classes import ErrorClass
from gateway.errors import PolyrouteError
from gateway.observability import names
from gateway.observability.metrics import Metrics
from gateway.observability.multiprocess import prepare_multiprocess_dir

REPO = Path(__file__).resolve().parents[3]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

QWEN = {
    "deployment": "qwen-plus",
    "provider": "qwen-cloud",
    "vendor": "alibaba",
    "hosting": "cloud",
}


def scrape(metrics: Metrics) -> Samples:
    body, _ = metrics.render()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for sample_name, labels in samples if sample_name == name]


@pytest.fixture
def metrics() -> Metrics:
    m = Metrics()
    m.set_known(
        aliases=["coder", "chat"],
        deployments=["qwen-plus", "qwen-local"],
        providers=["qwen-cloud", "gpu-pool"],
        vendors=["alibaba", "self"],
        tenants=["team-a"],
    )
    return m


def done(m: Metrics, **overrides: object) -> None:
    args: dict[str, object] = {
        "alias": "coder",
        **QWEN,
        "tenant": "team-a",
        "status": 200,
        "duration_s": 1.5,
        "overhead_s": 0.0004,
        "ttft_s": None,
        "stream": False,
    }
    args.update(overrides)
    m.request_done(**args)  # type: ignore[arg-type]


def test_requests_counted_by_status_class_with_identity_labels(metrics: Metrics) -> None:
    done(metrics)
    done(metrics)
    done(metrics, status=503)
    done(metrics, status=429)

    s = scrape(metrics)
    ident = {"alias": "coder", **QWEN, "tenant": "team-a"}
    assert value(s, names.REQUESTS_TOTAL, **ident, status_class="2xx") == 2
    assert value(s, names.REQUESTS_TOTAL, **ident, status_class="5xx") == 1
    assert value(s, names.REQUESTS_TOTAL, **ident, status_class="4xx") == 1


def test_durations_overhead_and_ttft_observed(metrics: Metrics) -> None:
    done(metrics, stream=True, ttft_s=0.3, duration_s=2.0, overhead_s=0.0003)
    done(metrics, stream=False, duration_s=0.7, overhead_s=0.002)

    s = scrape(metrics)
    dur = names.REQUEST_DURATION_SECONDS
    assert value(s, f"{dur}_count", alias="coder", deployment="qwen-plus", stream="true") == 1
    assert value(s, f"{dur}_sum", alias="coder", deployment="qwen-plus", stream="true") == 2.0
    assert value(s, f"{dur}_count", alias="coder", deployment="qwen-plus", stream="false") == 1
    ttft = names.TIME_TO_FIRST_TOKEN_SECONDS
    assert value(s, f"{ttft}_count", alias="coder", deployment="qwen-plus") == 1
    assert value(s, f"{ttft}_bucket", alias="coder", deployment="qwen-plus", le="0.25") == 0
    assert value(s, f"{ttft}_bucket", alias="coder", deployment="qwen-plus", le="0.5") == 1
    over = names.OVERHEAD_SECONDS
    assert value(s, f"{over}_count") == 2
    assert value(s, f"{over}_bucket", le="0.0005") == 1
    assert value(s, f"{over}_bucket", le="0.0001") == 0


def test_unknown_label_values_are_recorded_as_other(metrics: Metrics) -> None:
    for i in range(50):
        done(
            metrics,
            alias=f"typo-{i}",
            tenant=f"bad-key-{i}",
            deployment=f"d{i}",
            provider=f"p{i}",
            vendor="v",
            hosting="moon",
        )
        metrics.upstream_attempt(deployment="qwen-plus", provider="qwen-cloud", outcome=f"weird-{i}")
        metrics.rate_limited(tenant=f"bad-key-{i}", reason="because")
        metrics.state_store_error(op=f"op-{i}")
        metrics.policy_reload(result="maybe")
        metrics.fallback(from_deployment="qwen-plus", to_deployment=f"x{i}", reason="gremlins")

    s = scrape(metrics)
    other = dict.fromkeys(("alias", "deployment", "provider", "vendor", "hosting", "tenant"), "other")
    assert series(s, names.REQUESTS_TOTAL) == [{**other, "status_class": "2xx"}]
    assert value(s, names.REQUESTS_TOTAL, **other, status_class="2xx") == 50
    assert series(s, names.UPSTREAM_REQUESTS_TOTAL) == [
        {"deployment": "qwen-plus", "provider": "qwen-cloud", "outcome": "other"}
    ]
    assert value(s, names.RATE_LIMITED_TOTAL, tenant="other", reason="other") == 50
    assert value(s, names.STATE_STORE_ERRORS_TOTAL, op="other") == 50
    assert value(s, names.POLICY_RELOADS_TOTAL, result="other") == 50
    assert value(s, names.FALLBACKS_TOTAL, **{"from": "qwen-plus", "to": "other", "reason": "other"}) == 50


def test_none_is_kept_for_requests_that_reached_no_upstream(metrics: Metrics) -> None:
    done(metrics, alias="nope", deployment="none", provider="none", vendor="none", hosting="none", status=404)

    s = scrape(metrics)
    assert series(s, names.REQUESTS_TOTAL) == [
        {
            "alias": "other",
            "deployment": "none",
            "provider": "none",
            "vendor": "none",
            "hosting": "none",
            "tenant": "team-a",
            "status_class": "4xx",
        }
    ]


def test_reload_widens_known_values(metrics: Metrics) -> None:
    done(metrics, alias="new-alias")
    metrics.set_known(
        aliases=["coder", "new-alias"],
        deployments=["qwen-plus"],
        providers=["qwen-cloud"],
        vendors=["alibaba"],
        tenants=["team-a"],
    )
    done(metrics, alias="new-alias")

    s = scrape(metrics)
    aliases = sorted(labels["alias"] for labels in series(s, names.REQUESTS_TOTAL))
    assert aliases == ["new-alias", "other"]


def test_upstream_outcomes_and_fallbacks(metrics: Metrics) -> None:
    metrics.upstream_attempt(deployment="qwen-plus", provider="qwen-cloud", outcome="rate_limit")
    metrics.fallback(from_deployment="qwen-plus", to_deployment="qwen-local", reason="rate_limit")
    metrics.upstream_attempt(deployment="qwen-local", provider="gpu-pool", outcome="success")

    s = scrape(metrics)
    up = names.UPSTREAM_REQUESTS_TOTAL
    assert value(s, up, deployment="qwen-plus", provider="qwen-cloud", outcome="rate_limit") == 1
    assert value(s, up, deployment="qwen-local", provider="gpu-pool", outcome="success") == 1
    fb = {"from": "qwen-plus", "to": "qwen-local", "reason": "rate_limit"}
    assert value(s, names.FALLBACKS_TOTAL, **fb) == 1


def test_error_class_members_are_recorded_by_value(metrics: Metrics) -> None:
    metrics.upstream_attempt(deployment="qwen-plus", provider="qwen-cloud", outcome=ErrorClass.TIMEOUT)
    metrics.fallback(from_deployment="qwen-plus", to_deployment="qwen-local", reason=ErrorClass.TIMEOUT)

    s = scrape(metrics)
    assert (
        value(s, names.UPSTREAM_REQUESTS_TOTAL, deployment="qwen-plus", provider="qwen-cloud", outcome="timeout") == 1
    )
    assert value(s, names.FALLBACKS_TOTAL, **{"from": "qwen-plus", "to": "qwen-local", "reason": "timeout"}) == 1


def test_tokens_by_type_skip_zero_counts(metrics: Metrics) -> None:
    ident = {"alias": "coder", **QWEN, "tenant": "team-a"}
    metrics.tokens(**ident, input=100, output=20, cached=60, reasoning=0, estimated=False)
    metrics.tokens(**ident, input=7, output=0, cached=0, reasoning=0, estimated=True)

    s = scrape(metrics)
    tok = names.TOKENS_TOTAL
    assert value(s, tok, **ident, type="input", estimated="false") == 100
    assert value(s, tok, **ident, type="output", estimated="false") == 20
    assert value(s, tok, **ident, type="cached", estimated="false") == 60
    assert value(s, tok, **ident, type="input", estimated="true") == 7
    assert len(series(s, tok)) == 4  # no reasoning series, no zero-valued output/cached estimates


def test_cost_accumulates_and_ignores_non_positive(metrics: Metrics) -> None:
    ident = {"alias": "coder", **QWEN, "tenant": "team-a"}
    metrics.cost(**ident, usd=0.25)
    metrics.cost(**ident, usd=0.5)
    metrics.cost(**{**ident, "tenant": "team-z"}, usd=0.0)
    metrics.cost(**{**ident, "tenant": "team-z"}, usd=float("nan"))

    s = scrape(metrics)
    assert value(s, names.COST_USD_TOTAL, **ident) == 0.75
    assert len(series(s, names.COST_USD_TOTAL)) == 1


def test_gauges_circuit_inflight_budget(metrics: Metrics) -> None:
    metrics.circuit(deployment="qwen-plus", is_open=True)
    metrics.inflight(alias="chat", delta=1)
    metrics.inflight(alias="chat", delta=1)
    metrics.inflight(alias="chat", delta=-1)
    metrics.budget_remaining(tenant="team-a", period="day", usd=12.5)
    metrics.budget_remaining(tenant="team-a", period="month", usd=700.0)

    s = scrape(metrics)
    assert value(s, names.CIRCUIT_OPEN, deployment="qwen-plus") == 1
    assert value(s, names.CIRCUIT_OPEN, deployment="qwen-local") == 0  # every known deployment is shown
    assert value(s, names.INFLIGHT_REQUESTS, alias="chat") == 1
    assert value(s, names.BUDGET_REMAINING_USD, tenant="team-a", period="day") == 12.5
    assert value(s, names.BUDGET_REMAINING_USD, tenant="team-a", period="month") == 700.0


def test_removed_deployment_circuit_reads_closed_after_reload(metrics: Metrics) -> None:
    metrics.circuit(deployment="qwen-local", is_open=True)
    metrics.set_known(
        aliases=["coder"], deployments=["qwen-plus"], providers=["qwen-cloud"], vendors=["alibaba"], tenants=["team-a"]
    )
    metrics.circuit(deployment="qwen-local", is_open=True)  # now unknown: lands on "other"

    s = scrape(metrics)
    assert value(s, names.CIRCUIT_OPEN, deployment="qwen-local") == 0
    assert value(s, names.CIRCUIT_OPEN, deployment="other") == 1


def test_alerting_series_exist_before_first_event() -> None:
    s = scrape(Metrics())
    assert value(s, names.POLICY_RELOADS_TOTAL, result="error") == 0
    assert value(s, names.STATE_STORE_ERRORS_TOTAL, op="admit") == 0


def test_instances_do_not_share_a_registry() -> None:
    first, second = Metrics(), Metrics()
    first.policy_reload(result="success")

    assert value(scrape(first), names.POLICY_RELOADS_TOTAL, result="success") == 1
    assert value(scrape(second), names.POLICY_RELOADS_TOTAL, result="success") == 0


def test_render_is_prometheus_text_with_gen_ai_help(metrics: Metrics) -> None:
    body, content_type = metrics.render()

    assert content_type.startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert "gen_ai.provider.name" in text
    assert "gen_ai.token.type" in text
    declared = {f.name for f in text_string_to_metric_families(text)}
    assert {n.removesuffix("_total") for n in names.ALL} <= declared


def test_multiprocess_dir_without_environment_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolyrouteError, match="PROMETHEUS_MULTIPROC_DIR"):
        Metrics(multiprocess_dir=tmp_path)


# --- multi-process mode: each worker is a fresh interpreter, as under `polyroute serve --workers N` ---

WORKER = """
import os, sys
from pathlib import Path
from gateway.observability.metrics import Metrics

n, circuit_open, budget = int(sys.argv[2]), sys.argv[3] == "open", float(sys.argv[4])
m = Metrics(multiprocess_dir=Path(sys.argv[1]))
m.set_known(aliases=["coder"], deployments=["qwen-plus"], providers=["qwen-cloud"], vendors=["alibaba"],
            tenants=["team-a"])
for _ in range(n):
    m.request_done(alias="coder", deployment="qwen-plus", provider="qwen-cloud", vendor="alibaba", hosting="cloud",
                   tenant="team-a", status=200, duration_s=1.0, overhead_s=0.001, ttft_s=0.2, stream=True)
    m.tokens(alias="coder", deployment="qwen-plus", provider="qwen-cloud", vendor="alibaba", hosting="cloud",
             tenant="team-a", input=10, output=3, cached=0, reasoning=0, estimated=False)
m.inflight(alias="coder", delta=2)
m.circuit(deployment="qwen-plus", is_open=circuit_open)
m.budget_remaining(tenant="team-a", period="day", usd=budget)
print(os.getpid(), flush=True)
sys.stdin.read()  # keep running, like a serving worker, until the test closes stdin
"""

RENDER = """
import sys
from pathlib import Path
from gateway.observability.metrics import Metrics

sys.stdout.buffer.write(Metrics(multiprocess_dir=Path(sys.argv[1])).render()[0])
"""


def _env(env_dir: Path) -> dict[str, str]:
    return {"PROMETHEUS_MULTIPROC_DIR": str(env_dir), "PYTHONPATH": str(REPO)}


def run_python(code: str, env_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=_env(env_dir), cwd=REPO, capture_output=True, timeout=60, check=False
    )


class Worker:
    """A worker process that has recorded its metrics and keeps running until stop()."""

    def __init__(self, directory: Path, n: int, circuit: str, budget: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(directory), str(n), circuit, budget],
            env=_env(directory),
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()  # bounded: the worker prints its pid or exits (EOF)
        assert line.strip().isdigit(), self.stop()

    def stop(self) -> str:
        """Close its stdin so that it exits (a no-op once it has); returns what it wrote to stderr."""
        if self.popen.returncode is not None:
            return ""
        try:
            _, err = self.popen.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            _, err = self.popen.communicate()
        return err.decode()


def parse(body: bytes) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def render_all(directory: Path) -> Samples:
    result = run_python(RENDER, directory, str(directory))
    assert result.returncode == 0, result.stderr.decode()
    return parse(result.stdout)


def test_multiprocess_workers_are_aggregated_and_exited_workers_drop_live_gauges(tmp_path: Path) -> None:
    directory = tmp_path / "prom"
    prepare_multiprocess_dir(directory)
    first = Worker(directory, 3, "open", "40.0")
    second = Worker(directory, 5, "closed", "37.5")  # started second: its budget is the latest write
    try:
        s = render_all(directory)
        ident = {"alias": "coder", **QWEN, "tenant": "team-a"}
        assert value(s, names.REQUESTS_TOTAL, **ident, status_class="2xx") == 8
        duration_count = f"{names.REQUEST_DURATION_SECONDS}_count"
        assert value(s, duration_count, alias="coder", deployment="qwen-plus", stream="true") == 8
        ttft_bucket = f"{names.TIME_TO_FIRST_TOKEN_SECONDS}_bucket"
        assert value(s, ttft_bucket, alias="coder", deployment="qwen-plus", le="0.25") == 8
        assert value(s, names.TOKENS_TOTAL, **ident, type="input", estimated="false") == 80
        assert value(s, names.INFLIGHT_REQUESTS, alias="coder") == 4
        assert value(s, names.CIRCUIT_OPEN, deployment="qwen-plus") == 1
        assert value(s, names.BUDGET_REMAINING_USD, tenant="team-a", period="day") == 37.5

        first.stop()  # exits without any clean-up of its own, like a killed worker

        s = render_all(directory)
        assert value(s, names.REQUESTS_TOTAL, **ident, status_class="2xx") == 8  # counters outlive their worker
        assert value(s, names.INFLIGHT_REQUESTS, alias="coder") == 2  # a dead worker serves nothing
        assert value(s, names.CIRCUIT_OPEN, deployment="qwen-plus") == 0
        assert value(s, names.BUDGET_REMAINING_USD, tenant="team-a", period="day") == 37.5
    finally:
        first.stop()
        second.stop()


def test_prepare_multiprocess_dir_clears_a_previous_run(tmp_path: Path) -> None:
    directory = tmp_path / "prom"
    prepare_multiprocess_dir(directory)
    Worker(directory, 4, "closed", "1").stop()

    prepare_multiprocess_dir(directory)

    s = render_all(directory)
    assert (
        names.REQUESTS_TOTAL,
        frozenset({"alias": "coder", **QWEN, "tenant": "team-a", "status_class": "2xx"}.items()),
    ) not in s


def test_multiprocess_dir_must_match_the_environment(tmp_path: Path) -> None:
    env_dir, other_dir = tmp_path / "env", tmp_path / "other"
    prepare_multiprocess_dir(env_dir)
    prepare_multiprocess_dir(other_dir)

    result = run_python(RENDER, env_dir, str(other_dir))

    assert result.returncode != 0
    assert b"must name the same directory" in result.stderr
