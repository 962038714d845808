"""The soak's requests: chat, Messages and Responses, stream and not, through the official clients; each one's outcome.

An outcome is `ok`, `http_<status>` (an error the client's protocol carries), `stream_error` (a stream that ended with
its protocol's error event after its first bytes), `truncated` (a 200 that is not a complete answer: a stream that
stopped without its last event or an error event, or a body without what its protocol requires), or `lost` (no
response at all). Only the last two are failures: a gateway may refuse or fail a request, but never silently. A
failed check keeps its evidence: the raw status, headers and body (or the stream's last events) and the request id.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anthropic
import httpx
import httpx2
import openai

SOAK_KEY = "sk-soak"
CAPPED_KEY = "sk-soak-capped"
PROMPT = "Summarise what a soak test proves, in a few words."
TIMEOUT_S = 60.0
OK = "ok"
STREAM_ERROR = "stream_error"
TRUNCATED = "truncated"
LOST = "lost"
EVIDENCE_BYTES = 4000  # of a failed answer's body kept as evidence
EVIDENCE_EVENTS = 20  # of a failed stream's last events kept as evidence


@dataclass(frozen=True)
class Outcome:
    kind: str  # chat, chat-stream, messages, messages-stream, responses, responses-stream
    result: str
    sent: float  # wall-clock seconds
    received: float
    detail: str = ""
    request_id: str = ""  # polyroute's x-request-id (also sent upstream), when a response came
    evidence: str = ""  # for a failed check: the raw status, headers and body (or stream events) received


@dataclass(frozen=True)
class Checked:
    """What one call's check concluded, and what it saw."""

    result: str
    request_id: str = ""
    evidence: str = ""


class Clients:
    """One thread's clients (each keeps its own keep-alive connections through nginx)."""

    def __init__(self, base_url: str, key: str = SOAK_KEY) -> None:
        self.openai = openai.OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0, timeout=TIMEOUT_S)
        self.anthropic = anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0, timeout=TIMEOUT_S)

    def close(self) -> None:
        self.openai.close()
        self.anthropic.close()


def one_request(clients: Clients, rng: random.Random, alias: str) -> Outcome:
    """A request of a random kind, and how it ended."""
    kind, call = rng.choice(KINDS)
    return run(kind, lambda: call(clients, alias))


def capped_request(clients: Clients, alias: str) -> Outcome:
    return run("chat", lambda: _chat(clients, alias))


def run(kind: str, call: Callable[[], Checked]) -> Outcome:
    sent = time.time()
    try:
        checked = call()
    except (openai.APIStatusError, anthropic.APIStatusError) as err:
        # An error event inside a stream reaches the clients as a status error of the stream's 200.
        request_id = err.response.headers.get("x-request-id", "")
        if err.status_code != 200:
            return Outcome(kind, f"http_{err.status_code}", sent, time.time(), str(err.message)[:200], request_id)
        checked = Checked(STREAM_ERROR, request_id)
    except (openai.APIConnectionError, anthropic.APIConnectionError) as err:
        return Outcome(kind, LOST, sent, time.time(), repr(err)[:200])
    except (openai.APIError, anthropic.APIError):
        checked = Checked(STREAM_ERROR)  # openai's client raises a bare APIError for `data: {"error": ...}` in a stream
    except (httpx.HTTPError, httpx2.HTTPError) as err:  # the clients wrap errors before the response, not in a stream
        # (anthropic's client runs on its own copy of httpx, httpx2)
        return Outcome(kind, TRUNCATED, sent, time.time(), repr(err)[:200])
    return Outcome(kind, checked.result, sent, time.time(), "", checked.request_id, checked.evidence)


class RawAnswer(Protocol):
    """The raw HTTP response under either official client (anthropic's carries its own copy of httpx)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Any: ...

    @property
    def content(self) -> bytes: ...


def _checked(result: str, response: RawAnswer, seen: str | None = None) -> Checked:
    """The check's result with the request id; when it failed, the raw answer (or, for a stream, what it saw)."""
    request_id = response.headers.get("x-request-id", "")
    if result in (OK, STREAM_ERROR):
        return Checked(result, request_id)
    headers = {k: v for k, v in response.headers.items() if k.startswith(("x-", "content-"))}
    body = seen if seen is not None else repr(response.content[:EVIDENCE_BYTES])
    return Checked(result, request_id, f"HTTP {response.status_code} headers {headers} body {body}")


def _chat(clients: Clients, alias: str) -> Checked:
    raw = clients.openai.chat.completions.with_raw_response.create(
        model=alias, messages=[{"role": "user", "content": PROMPT}], max_tokens=64
    )
    answer = raw.parse()
    return _checked(OK if answer.choices and answer.choices[0].finish_reason else TRUNCATED, raw.http_response)


def _chat_stream(clients: Clients, alias: str) -> Checked:
    stream = clients.openai.chat.completions.create(
        model=alias, messages=[{"role": "user", "content": PROMPT}], max_tokens=64, stream=True
    )
    finished = False
    seen: list[str] = []
    with stream:
        for chunk in stream:
            finished = finished or any(choice.finish_reason for choice in chunk.choices)
            seen.append(chunk.model_dump_json()[:200])
    return _checked(OK if finished else TRUNCATED, stream.response, f"events {seen[-EVIDENCE_EVENTS:]}")


def _messages(clients: Clients, alias: str) -> Checked:
    raw = clients.anthropic.messages.with_raw_response.create(
        model=alias, max_tokens=64, messages=[{"role": "user", "content": PROMPT}]
    )
    answer = raw.parse()
    return _checked(OK if answer.stop_reason and answer.content else TRUNCATED, raw.http_response)


def _messages_stream(clients: Clients, alias: str) -> Checked:
    stopped = False
    seen: list[str] = []
    with clients.anthropic.messages.stream(
        model=alias, max_tokens=64, messages=[{"role": "user", "content": PROMPT}]
    ) as stream:
        for event in stream:
            stopped = stopped or event.type == "message_stop"
            seen.append(event.type)
    return _checked(OK if stopped else TRUNCATED, stream.response, f"events {seen[-EVIDENCE_EVENTS:]}")


def _responses(clients: Clients, alias: str) -> Checked:
    raw = clients.openai.responses.with_raw_response.create(model=alias, input=PROMPT, max_output_tokens=64)
    answer = raw.parse()
    # A 200 that is not a finished Response (the soak of issue 21 saw `status: None`) is a truncated answer.
    return _checked(OK if answer.status in ("completed", "incomplete") else TRUNCATED, raw.http_response)


def _responses_stream(clients: Clients, alias: str) -> Checked:
    seen: list[str] = []
    with clients.openai.responses.create(model=alias, input=PROMPT, max_output_tokens=64, stream=True) as stream:
        for event in stream:
            seen.append(event.type)
    last = seen[-1] if seen else None
    if last in ("response.completed", "response.incomplete"):
        result = OK
    else:
        result = STREAM_ERROR if last in ("response.failed", "error") else TRUNCATED
    return _checked(result, stream.response, f"events {seen[-EVIDENCE_EVENTS:]}")


KINDS: tuple[tuple[str, Callable[[Clients, str], Checked]], ...] = (
    ("chat", _chat),
    ("chat-stream", _chat_stream),
    ("messages", _messages),
    ("messages-stream", _messages_stream),
    ("responses", _responses),
    ("responses-stream", _responses_stream),
)

# Upstream misbehaviour injected now and then (gateway.demo.sim_faults): failures before the first byte, which
# fallback absorbs, and failures mid-stream, which must reach the client as its protocol's error event.
FAULTS: tuple[dict[str, Any], ...] = (
    {"fault": "status", "status": 500, "count": 3},
    {"fault": "status", "status": 503, "count": 2},
    {"fault": "throttling", "count": 3},
    {"fault": "reset", "count": 2},
    {"fault": "reset_mid_stream", "count": 2, "after": 2},
    {"fault": "inband_error", "count": 2, "after": 1},
    {"fault": "slow_first_token", "count": 2, "delay": 0.5},
    {"fault": "stall_mid_stream", "count": 2, "delay": 0.5, "after": 1},
    {"fault": "malformed_json", "count": 1},
)
