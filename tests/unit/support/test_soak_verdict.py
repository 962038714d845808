"""The soak's verdict (scripts/soak): it fails on any lost or truncated response, any over-admission, a failed
reload, a load thread that died, and growth of a replica's memory or open files; it passes a clean run."""

from __future__ import annotations

from tests.support.soak import CAPPED_RPM, Sample, verdict
from tests.support.soak_load import LOST, OK, STREAM_ERROR, TRUNCATED, Outcome

RSS_KB = 75 * 1024


def _samples(rss_kb: list[int], fds: list[int] | None = None) -> list[Sample]:
    """One sample every 10 s from the start, both replicas alike."""
    counts = fds or [20] * len(rss_kb)
    pairs = enumerate(zip(rss_kb, counts, strict=True))
    return [Sample(at=10.0 * i, rss_kb=[kb, kb], fds=[n, n]) for i, (kb, n) in pairs]


FLAT = _samples([RSS_KB] * 30)
CLEAN = [
    Outcome("chat", OK, 0.0, 0.1),
    Outcome("messages-stream", STREAM_ERROR, 1.0, 1.1),
    Outcome("responses", "http_503", 2.0, 2.1),
]
RELOADED = ["    60s policy reload: [200, 200]", "   120s redis restart: down 0.4s"]


def _capped(spacing_s: float, count: int) -> list[Outcome]:
    return [Outcome("chat", OK, i * spacing_s, i * spacing_s + 0.05) for i in range(count)]


def test_a_clean_run_passes() -> None:
    assert verdict(CLEAN, _capped(2.1, 90), FLAT, RELOADED) == []


def test_one_truncated_or_lost_response_fails_it() -> None:
    for result in (TRUNCATED, LOST, "response_None"):
        broken = [*CLEAN, Outcome("responses", result, 3.0, 3.1)]
        assert verdict(broken, [], FLAT, RELOADED) == ["1 lost or truncated responses"]


def test_more_than_the_limit_admitted_in_some_minute_fails_it() -> None:
    # At twice the limit, every request admitted: the second half of each minute is over the limit.
    problems = verdict(CLEAN, _capped(1.0, 2 * CAPPED_RPM), FLAT, RELOADED)
    assert len(problems) == 1 and problems[0].endswith("over-admissions of the capped tenant")
    assert verdict(CLEAN, _capped(60.0 / CAPPED_RPM + 0.1, 3 * CAPPED_RPM), FLAT, RELOADED) == []


def test_memory_or_open_files_growing_over_the_run_fails_it() -> None:
    growing = _samples([RSS_KB + i * 1024 for i in range(30)])  # +1 MB every 10 s
    assert verdict(CLEAN, [], growing, RELOADED) == ["replica 1 RSS grew 19%", "replica 2 RSS grew 19%"]
    leaking = _samples([RSS_KB] * 30, fds=[20 + i for i in range(30)])
    assert verdict(CLEAN, [], leaking, RELOADED) == [
        "replica 1 open files grew by 16", "replica 2 open files grew by 16"
    ]


def test_a_failed_reload_or_a_dead_load_thread_fails_it() -> None:
    assert verdict(CLEAN, [], FLAT, ["    60s policy reload: [200, 500]"]) == ["a policy reload failed"]
    assert verdict(CLEAN, [], FLAT, ["load thread 3 died: KeyError('x')"]) == ["a load thread died"]
