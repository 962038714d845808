"""Tests of deploy/prometheus and deploy/grafana: valid files that only use metrics the gateway exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.observability import names

REPO = Path(__file__).resolve().parents[3]
PROMETHEUS_CONFIG = REPO / "deploy/prometheus/prometheus.yml"
RULES = REPO / "deploy/prometheus/rules.yml"
DASHBOARD = REPO / "deploy/grafana/dashboards/polyroute.json"
DATASOURCES = REPO / "deploy/grafana/provisioning/datasources/prometheus.yaml"
DASHBOARD_PROVIDERS = REPO / "deploy/grafana/provisioning/dashboards/polyroute.yaml"

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not on PATH (Debian: apt-get install prometheus)"
)

EXPORTED_SERIES = frozenset(names.ALL) | {
    f"{histogram}{suffix}" for histogram in names.HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")
}
ALERT_KEYS = {"alert", "expr", "for", "labels", "annotations"}
RECORD_KEYS = {"record", "expr"}
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$alias": ".*", "$tenant": ".*"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def polyroute_names(expr: str) -> set[str]:
    """Metric names (raw or recorded) an expression reads; quoted label values are not names."""
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return {token for token in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", unquoted) if "polyroute_" in token}


def unknown_names(expr: str, recorded: set[str]) -> set[str]:
    return {n for n in polyroute_names(expr) if n not in (recorded if ":" in n else EXPORTED_SERIES)}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def panel_exprs() -> list[str]:
    return [t["expr"] for p in all_panels(dashboard()["panels"]) for t in p.get("targets", [])]


def as_promql(expr: str) -> str:
    for variable, replacement in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, replacement)
    assert "$" not in expr, f"unhandled Grafana variable in {expr!r}"
    return expr


# --- Prometheus ---


def test_prometheus_scrapes_both_replicas_and_loads_the_rules() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)

    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "polyroute"]
    assert job["metrics_path"] == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == ["gateway-1:8080", "gateway-2:8080"]
    assert [(PROMETHEUS_CONFIG.parent / f).resolve() for f in config["rule_files"]] == [RULES.resolve()]


def test_every_rule_is_a_complete_alert_or_recording_rule() -> None:
    for rule in rules():
        if "alert" in rule:
            assert set(rule) == ALERT_KEYS, rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
            assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        else:
            assert set(rule) == RECORD_KEYS, rule
            assert rule["record"].count(":") == 2, f"{rule['record']}: name as level:metric:operation"
        assert isinstance(rule["expr"], str) and rule["expr"].strip()


def test_rules_read_only_exported_or_recorded_metrics() -> None:
    recorded = recorded_names()
    for rule in rules():
        assert not unknown_names(rule["expr"], recorded), rule.get("alert") or rule["record"]


def test_alerts_cover_the_failure_modes_operators_page_on() -> None:
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}

    assert {
        "PolyrouteHighErrorRate",
        "PolyrouteCircuitOpen",
        "PolyrouteBudgetNearlySpent",
        "PolyrouteFallbackSurge",
        "PolyrouteStateStoreErrors",
    } <= set(alerts)
    assert alerts["PolyrouteHighErrorRate"]["for"] == "5m"
    assert alerts["PolyrouteCircuitOpen"]["expr"].strip() == "max by (deployment) (polyroute_circuit_open) > 0"
    assert alerts["PolyrouteCircuitOpen"]["for"] == "1m"
    recorded = recorded_names()
    for quantile in ("p50", "p95", "p99"):
        assert f"alias_deployment:{names.REQUEST_DURATION_SECONDS}:{quantile}_5m" in recorded
        assert f"alias_deployment:{names.TIME_TO_FIRST_TOKEN_SECONDS}:{quantile}_5m" in recorded


# --- Grafana ---


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard_folder() -> None:
    (source,) = load_yaml(DATASOURCES)["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    (provider,) = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"

    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == source["uid"]


def test_dashboard_identity_and_unique_panel_ids() -> None:
    board = dashboard()

    assert board["uid"] == "polyroute"
    assert 36 <= board["schemaVersion"] <= 41
    ids = [p["id"] for p in all_panels(board["panels"])]
    assert len(ids) == len(set(ids))


def test_dashboard_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in all_panels(dashboard()["panels"]):
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, panel["title"]
        taken |= cells


def test_dashboard_queries_read_only_exported_or_recorded_metrics() -> None:
    recorded = recorded_names()
    board = dashboard()
    variable_queries = [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    for expr in panel_exprs() + variable_queries:
        assert not unknown_names(expr, recorded), expr


def test_every_exported_metric_has_a_dashboard_panel() -> None:
    used = set().union(*(polyroute_names(expr) for expr in panel_exprs()))

    def shown(name: str) -> bool:
        suffixes = ("_bucket", "_sum", "_count") if name in names.HISTOGRAMS else ("",)
        return any(name + suffix in used for suffix in suffixes)

    assert [name for name in names.ALL if not shown(name)] == []


def test_every_panel_queries_the_dashboard_datasource() -> None:
    for panel in all_panels(dashboard()["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


# --- promtool (Debian package `prometheus`; CI installs it) ---


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, check=False)


@needs_promtool
def test_promtool_accepts_config_and_rules() -> None:
    checked = promtool("check", "config", PROMETHEUS_CONFIG)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    checked = promtool("check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    # promtool has no offline expression check, so each query is checked as the body of a recording rule.
    group = {
        "name": "dashboard",
        "rules": [{"record": f"dashboard:query_{i}:check", "expr": as_promql(e)} for i, e in enumerate(panel_exprs())],
    }
    as_rules = tmp_path / "dashboard_rules.yml"
    as_rules.write_text(yaml.safe_dump({"groups": [group]}), encoding="utf-8")

    checked = promtool("check", "rules", as_rules)

    assert checked.returncode == 0, checked.stdout + checked.stderr


def firing(alertname: str, severity: str, **labels: str) -> dict[str, Any]:
    label_text = ", ".join(
        f'{k}="{v}"'
        for k, v in {"alertname": alertname, "alertstate": "firing", "severity": severity, **labels}.items()
    )
    return {"labels": f'{{__name__="ALERTS", {label_text}}}', "value": 1}


def series(metric: str, values: str, **labels: str) -> dict[str, str]:
    label_text = ",".join(f'{k}="{v}"' for k, v in {"job": "polyroute", "instance": "gateway-1:8080", **labels}.items())
    return {"series": f"{metric}{{{label_text}}}", "values": values}


ALERT_SCENARIOS: dict[str, dict[str, Any]] = {
    "5xx above 5% of a busy alias": {
        "input_series": [
            series(names.REQUESTS_TOTAL, "0+10x30", alias="coder", status_class="5xx"),
            series(names.REQUESTS_TOTAL, "0+90x30", alias="coder", status_class="2xx"),
            series(names.REQUESTS_TOTAL, "0+1x30", alias="rare", status_class="5xx"),  # too little traffic to page
        ],
        "eval_time": "15m",
        "exp_samples": [firing("PolyrouteHighErrorRate", "critical", alias="coder")],
    },
    "circuit open on one replica": {
        "input_series": [
            series(names.CIRCUIT_OPEN, "1x10", deployment="qwen-plus"),
            series(names.CIRCUIT_OPEN, "0x10", deployment="qwen-plus", instance="gateway-2:8080"),
            series(names.CIRCUIT_OPEN, "0x10", deployment="qwen-local"),
        ],
        "eval_time": "5m",
        "exp_samples": [firing("PolyrouteCircuitOpen", "warning", deployment="qwen-plus")],
    },
    "daily budget under 10%": {
        "input_series": [
            series(names.BUDGET_REMAINING_USD, "100-1x100", tenant="team-a", period="day"),
            series(names.BUDGET_REMAINING_USD, "800-1x100", tenant="team-a", period="month"),
        ],
        "eval_time": "98m",
        "exp_samples": [firing("PolyrouteBudgetNearlySpent", "warning", tenant="team-a", period="day")],
    },
    "a quarter of requests fall back": {
        "input_series": [
            series(names.REQUESTS_TOTAL, "0+100x30", alias="coder", status_class="2xx"),
            series(names.FALLBACKS_TOTAL, "0+25x30", **{"from": "qwen-plus", "to": "qwen-local"}, reason="timeout"),
        ],
        "eval_time": "20m",
        "exp_samples": [firing("PolyrouteFallbackSurge", "warning")],
    },
    "state store failing": {
        "input_series": [
            series(names.STATE_STORE_ERRORS_TOTAL, "0+5x10", op="admit"),
            series(names.STATE_STORE_ERRORS_TOTAL, "0x10", op="settle"),
        ],
        "eval_time": "8m",
        "exp_samples": [firing("PolyrouteStateStoreErrors", "critical", op="admit")],
    },
    "critical alias without a portable target": {
        "input_series": [
            series(names.ALIAS_PORTABLE, "0x40", alias="coder", critical="true"),
            series(names.ALIAS_PORTABLE, "0x40", alias="chat", critical="false"),  # not critical: reported, no page
            series(names.ALIAS_PORTABLE, "1x40", alias="embed", critical="true"),
        ],
        "eval_time": "35m",
        "exp_samples": [firing("PolyrouteCriticalAliasLockedIn", "warning", alias="coder")],
    },
    "a deployment retiring within 30 days": {
        "input_series": [
            series(names.DEPLOYMENT_DAYS_TO_RETIREMENT, "29x90", deployment="qwen-old"),
            series(names.DEPLOYMENT_DAYS_TO_RETIREMENT, "90x90", deployment="qwen-plus"),  # far off: no alert
        ],
        "eval_time": "65m",
        "exp_samples": [firing("PolyrouteDeploymentRetiring", "warning", deployment="qwen-old")],
    },
    "quiet system": {
        "input_series": [
            series(names.REQUESTS_TOTAL, "0+100x30", alias="coder", status_class="2xx"),
            series(names.CIRCUIT_OPEN, "0x30", deployment="qwen-plus"),
            series(names.BUDGET_REMAINING_USD, "100-1x30", tenant="team-a", period="day"),
            series(names.STATE_STORE_ERRORS_TOTAL, "0x30", op="admit"),
        ],
        "eval_time": "30m",
        "exp_samples": [],
    },
}


@needs_promtool
@pytest.mark.parametrize("scenario", sorted(ALERT_SCENARIOS))
def test_alert_fires_exactly_when_expected(scenario: str, tmp_path: Path) -> None:
    case = ALERT_SCENARIOS[scenario]
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(RULES)],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": case["input_series"],
                        "promql_expr_test": [
                            {
                                "expr": 'ALERTS{alertstate="firing"}',
                                "eval_time": case["eval_time"],
                                "exp_samples": case["exp_samples"],
                            }
                        ],
                    }
                ],
            }
        ),
        encoding="utf-8",
    )

    result = promtool("test", "rules", test_file)

    assert result.returncode == 0, result.stdout + result.stderr
