"""Process settings: what worker processes inherit from the process that starts them."""

from __future__ import annotations

import pytest

from gateway.settings import Settings, export_for_workers


def test_workers_get_the_upstream_answer_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POLICY", "REDIS_URL", "ADMIN_KEY", "MAX_BODY_BYTES", "STATE_FAILURE_MODE", "METRICS_PORT",
                 "MAX_UPSTREAM_BODY_BYTES", "MAX_SSE_EVENT_BYTES"):
        monkeypatch.setenv(f"POLYROUTE_{name}", "")  # so that the export's value is removed after the test
        monkeypatch.delenv(f"POLYROUTE_{name}")
    export_for_workers(Settings(max_upstream_body_bytes=1234567, max_sse_event_bytes=76543), None)
    worker = Settings()  # as a worker reads its settings: from the environment
    assert (worker.max_upstream_body_bytes, worker.max_sse_event_bytes) == (1234567, 76543)


def test_the_defaults_bound_an_answer_to_64_mib_and_an_event_to_8_mib() -> None:
    settings = Settings()
    assert (settings.max_upstream_body_bytes, settings.max_sse_event_bytes) == (64 * 1024 * 1024, 8 * 1024 * 1024)
