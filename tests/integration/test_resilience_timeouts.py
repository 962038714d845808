"""Timeouts (connect, first token, total) and client disconnects, for both provider types."""

from __future__ import annotations

import openai
import pytest

from tests.support.resilience import (
    HELLO,
    PRIMARY_MODEL,
    PROVIDER_TYPES,
    Resilience,
    content_of,
    error_of,
    eventually,
    output_of,
    stream_lines,
)

# The stack's policy: timeouts {connect: 1s, first_token: 1s, total: 3s}; streams have 8 frames.


def inject(rs: Resilience, ptype: str, fault: str, **params: object) -> None:
    rs.cloud.inject([{"fault": fault, "count": 1, "model": PRIMARY_MODEL[ptype], **params}])


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_a_slow_first_token_fails_over(rs: Resilience, ptype: str) -> None:
    inject(rs, ptype, "slow_first_token", delay=2.5)
    headers, lines = stream_lines(rs.client(), f"chain-{ptype}")
    assert headers["x-polyroute-deployment"] == "backup"
    assert headers["x-polyroute-fallback-reason"] == "timeout"
    assert lines[-1] == "[DONE]" and "sim-local" in content_of(lines)


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_when_every_target_times_out_the_client_gets_504_naming_the_timeout(rs: Resilience, ptype: str) -> None:
    inject(rs, ptype, "slow_first_token", delay=2.5)
    with pytest.raises(openai.APIStatusError) as info:
        list(rs.client().chat.completions.create(model=f"solo-{ptype}", messages=HELLO, stream=True))
    assert info.value.status_code == 504
    assert f"primary-{ptype}: timeout" in str(info.value) and "first_token" in str(info.value)


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_a_non_stream_answer_is_not_cut_by_the_first_token_timeout(rs: Resilience, ptype: str) -> None:
    inject(rs, ptype, "delay", delay=1.8)  # longer than first_token, shorter than total
    raw = rs.client().chat.completions.with_raw_response.create(model=f"chain-{ptype}", messages=HELLO)
    assert raw.headers["x-polyroute-deployment"] == f"primary-{ptype}"
    assert raw.headers["x-polyroute-attempts"] == "1"


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_a_non_stream_answer_slower_than_total_fails_over(rs: Resilience, ptype: str) -> None:
    inject(rs, ptype, "delay", delay=4.5)
    raw = rs.client().chat.completions.with_raw_response.create(model=f"chain-{ptype}", messages=HELLO)
    assert raw.headers["x-polyroute-deployment"] == "backup"
    assert raw.headers["x-polyroute-fallback-reason"] == "timeout"


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_a_slow_but_flowing_stream_is_not_cut(rs: Resilience, ptype: str) -> None:
    inject(rs, ptype, "delay", delay=0.17)  # 8 frames: longer in all than first_token, within total
    # (no thinking: qwen3.6-plus would otherwise stream 8 reasoning frames before its 8 content frames)
    headers, lines = stream_lines(rs.client(), f"chain-{ptype}", extra_body={"enable_thinking": False})
    assert headers["x-polyroute-deployment"] == f"primary-{ptype}"
    assert lines[-1] == "[DONE]"
    assert not any(line.startswith('{"error"') for line in lines)
    assert "sim-cloud" in content_of(lines)


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_a_stream_stalled_past_total_ends_with_a_timeout_event_and_done(rs: Resilience, ptype: str) -> None:
    inject(rs, ptype, "stall_mid_stream", after=3, delay=6)
    headers, lines = stream_lines(rs.client(), f"chain-{ptype}")
    assert headers["x-polyroute-deployment"] == f"primary-{ptype}"  # bytes were sent: no failover
    assert lines[-1] == "[DONE]"
    assert "total timeout" in error_of(lines[-2])["message"]
    assert output_of(lines[:-2])  # what came before the stall (qwen3.6-plus's reasoning, here)


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_a_refused_connection_fails_over(rs: Resilience, ptype: str) -> None:
    raw = rs.client().chat.completions.with_raw_response.create(model=f"gone-{ptype}", messages=HELLO)
    assert raw.headers["x-polyroute-deployment"] == "backup"
    assert raw.headers["x-polyroute-fallback-reason"] == "connection_error"


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
@pytest.mark.parametrize("stream", [False, True])
def test_a_connect_that_hangs_fails_over_at_the_connect_timeout(rs: Resilience, ptype: str, stream: bool) -> None:
    if stream:
        headers, lines = stream_lines(rs.client(), f"hang-{ptype}")
        assert lines[-1] == "[DONE]" and "sim-local" in content_of(lines)
    else:
        raw = rs.client().chat.completions.with_raw_response.create(model=f"hang-{ptype}", messages=HELLO)
        headers = dict(raw.headers)
    assert headers["x-polyroute-deployment"] == "backup"
    assert headers["x-polyroute-fallback-reason"] == "timeout"


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_a_connect_that_hangs_is_a_504_naming_the_connect_timeout(rs: Resilience, ptype: str) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        rs.client().chat.completions.create(model=f"stuck-{ptype}", messages=HELLO)
    assert info.value.status_code == 504
    assert f"hang-{ptype}: timeout" in str(info.value) and "connect" in str(info.value)


def clients_gone(rs: Resilience) -> int:
    gone: int = rs.cloud.stats()["clients_gone"]
    return gone


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_a_client_that_gives_up_cancels_the_upstream_request(rs: Resilience, ptype: str) -> None:
    before = clients_gone(rs)
    inject(rs, ptype, "delay", delay=2.5)  # within total: only the client's leaving can end it early
    with rs.new_client(timeout=0.5) as client, pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model=f"solo-{ptype}", messages=HELLO)
    eventually(lambda: clients_gone(rs) > before, "the upstream to see its request cancelled", timeout=1.8)


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_a_client_that_leaves_a_stream_cancels_the_upstream_stream(rs: Resilience, ptype: str) -> None:
    before = clients_gone(rs)
    inject(rs, ptype, "delay", delay=0.3)  # 8 frames: about 2.4 s in all
    with rs.new_client() as client, client.chat.completions.with_streaming_response.create(
        model=f"solo-{ptype}", messages=HELLO, stream=True
    ) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
    eventually(lambda: clients_gone(rs) > before, "the upstream to see its stream abandoned", timeout=1.8)
