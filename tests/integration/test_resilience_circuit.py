"""Circuit breakers: failures open a deployment's circuit, it is skipped and shown by route explain, a probe closes it.

(That replicas sharing Redis agree on an open circuit is tested in test_multi_replica.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.support.resilience import (
    HELLO,
    PRIMARY_MODEL,
    PROVIDER_TYPES,
    Resilience,
    eventually,
    metric,
    resilience_stack,
)


@pytest.fixture(scope="module")
def breaker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Resilience]:
    with resilience_stack(tmp_path_factory.mktemp("circuit"), failures=2, cooldown="1500ms") as stack:
        yield stack


def explain(rs: Resilience, alias: str) -> dict[str, Any]:
    status, plan = rs.admin("POST", "/admin/routes/explain", {"model": alias, "messages": HELLO})
    assert status == 200, plan
    result: dict[str, Any] = plan
    return result


def chat(rs: Resilience, alias: str) -> dict[str, str]:
    return dict(rs.client().chat.completions.with_raw_response.create(model=alias, messages=HELLO).headers)


def circuit_open(rs: Resilience, deployment: str) -> float:
    return metric(rs.metrics(), "polyroute_circuit_open", deployment=deployment)


def primary_requests(rs: Resilience, ptype: str) -> int:
    count: int = rs.cloud.stats()["requests_by_model"].get(PRIMARY_MODEL[ptype], 0)
    return count


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_open_skip_half_open_probe_and_close(breaker: Resilience, ptype: str) -> None:
    rs, primary, alias = breaker, f"primary-{ptype}", f"chain-{ptype}"
    rs.cloud.inject([{"fault": "internal", "count": 2, "model": PRIMARY_MODEL[ptype]}])
    for _ in range(2):  # policy: failures: 2 within the window open the circuit
        headers = chat(rs, alias)
        assert headers["x-polyroute-deployment"] == "backup"
        assert headers["x-polyroute-fallback-reason"] == "server_error"
    assert circuit_open(rs, primary) == 1

    plan = explain(rs, alias)
    assert plan["attempts"] == ["backup"]
    assert {"deployment": primary, "reason": "circuit open"} in plan["excluded"]

    before = primary_requests(rs, ptype)
    headers = chat(rs, alias)
    assert headers["x-polyroute-deployment"] == "backup" and headers["x-polyroute-attempts"] == "1"
    assert "x-polyroute-fallback-reason" not in headers
    assert primary_requests(rs, ptype) == before  # an open circuit is not even tried

    # After the cooldown the circuit is half-open: one probe may go; it fails here, so the circuit opens again.
    eventually(lambda: explain(rs, alias)["attempts"][0] == primary, "the cooldown to end", timeout=5)
    rs.cloud.inject([{"fault": "internal", "count": 1, "model": PRIMARY_MODEL[ptype]}])
    headers = chat(rs, alias)
    assert headers["x-polyroute-deployment"] == "backup" and headers["x-polyroute-fallback-reason"] == "server_error"
    assert primary in {e["deployment"] for e in explain(rs, alias)["excluded"]}

    # The next probe succeeds and closes the circuit.
    eventually(lambda: explain(rs, alias)["attempts"][0] == primary, "the second cooldown to end", timeout=5)
    headers = chat(rs, alias)
    assert headers["x-polyroute-deployment"] == primary and headers["x-polyroute-attempts"] == "1"
    eventually(lambda: circuit_open(rs, primary) == 0, "the circuit gauge to fall back to 0", timeout=3)
    assert chat(rs, alias)["x-polyroute-deployment"] == primary


def test_when_every_circuit_is_open_the_client_gets_503_naming_it(breaker: Resilience) -> None:
    rs = breaker
    rs.cloud.inject([{"fault": "internal", "count": 2, "model": PRIMARY_MODEL["openai"]}])
    for _ in range(2):
        with pytest.raises(openai.APIStatusError) as failed:
            rs.client().chat.completions.create(model="solo-openai", messages=HELLO)
        assert failed.value.status_code == 502
    with pytest.raises(openai.APIStatusError) as info:
        rs.client().chat.completions.create(model="solo-openai", messages=HELLO)
    assert info.value.status_code == 503
    assert "primary-openai: excluded by circuit open" in str(info.value)
    status, body = rs.admin("POST", "/admin/routes/explain", {"model": "solo-openai", "messages": HELLO})
    assert status == 503 and "circuit open" in body["error"]["message"]
