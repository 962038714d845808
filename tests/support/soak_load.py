"""The soak's requests: chat, Messages and Responses, stream and not, through the official clients; each one's outcome.

An outcome is `ok`, `http_<status>` (an error the client's protocol carries), `stream_error` (a stream that ended with
its protocol's error event after its first bytes), `truncated` (a stream that stopped without its last event or an
error event), or `lost` (no response at all). Only the last two are failures: a gateway may refuse or fail a request,
but never silently.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import openai

SOAK_KEY = "sk-soak"
CAPPED_KEY = "sk-soak-capped"
PROMPT = "Summarise what a soak test proves, in a few words."
TIMEOUT_S = 60.0
OK = "ok"
STREAM_ERROR = "stream_error"
TRUNCATED = "truncated"
LOST = "lost"
FAILURES = (TRUNCATED, LOST)


@dataclass(frozen=True)
class Outcome:
    kind: str  # chat, chat-stream, messages, messages-stream, responses, responses-stream
    result: str
    sent: float  # wall-clock seconds
    received: float
    detail: str = ""


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


def run(kind: str, call: Callable[[], str]) -> Outcome:
    sent = time.time()
    try:
        result = call()
    except (openai.APIStatusError, anthropic.APIStatusError) as err:
        # An error event inside a stream reaches the clients as a status error of the stream's 200.
        if err.status_code != 200:
            return Outcome(kind, f"http_{err.status_code}", sent, time.time(), str(err.message)[:200])
        result = STREAM_ERROR
    except (openai.APIConnectionError, anthropic.APIConnectionError) as err:
        return Outcome(kind, LOST, sent, time.time(), repr(err)[:200])
    except (openai.APIError, anthropic.APIError):
        result = STREAM_ERROR  # openai's client raises a bare APIError for `data: {"error": ...}` in a stream
    except httpx.HTTPError as err:  # the clients wrap errors before the response; this one broke a stream
        return Outcome(kind, TRUNCATED, sent, time.time(), repr(err)[:200])
    return Outcome(kind, result, sent, time.time())


def _chat(clients: Clients, alias: str) -> str:
    answer = clients.openai.chat.completions.create(
        model=alias, messages=[{"role": "user", "content": PROMPT}], max_tokens=64
    )
    return OK if answer.choices and answer.choices[0].finish_reason else TRUNCATED


def _chat_stream(clients: Clients, alias: str) -> str:
    stream = clients.openai.chat.completions.create(
        model=alias, messages=[{"role": "user", "content": PROMPT}], max_tokens=64, stream=True
    )
    finished = False
    with stream:
        for chunk in stream:
            finished = finished or any(choice.finish_reason for choice in chunk.choices)
    return OK if finished else TRUNCATED


def _messages(clients: Clients, alias: str) -> str:
    answer = clients.anthropic.messages.create(
        model=alias, max_tokens=64, messages=[{"role": "user", "content": PROMPT}]
    )
    return OK if answer.stop_reason and answer.content else TRUNCATED


def _messages_stream(clients: Clients, alias: str) -> str:
    stopped = False
    with clients.anthropic.messages.stream(
        model=alias, max_tokens=64, messages=[{"role": "user", "content": PROMPT}]
    ) as stream:
        for event in stream:
            stopped = stopped or event.type == "message_stop"
    return OK if stopped else TRUNCATED


def _responses(clients: Clients, alias: str) -> str:
    answer = clients.openai.responses.create(model=alias, input=PROMPT, max_output_tokens=64)
    return OK if answer.status in ("completed", "incomplete") else f"response_{answer.status}"


def _responses_stream(clients: Clients, alias: str) -> str:
    last: Any = None
    with clients.openai.responses.create(model=alias, input=PROMPT, max_output_tokens=64, stream=True) as stream:
        for event in stream:
            last = event.type
    if last in ("response.completed", "response.incomplete"):
        return OK
    return STREAM_ERROR if last in ("response.failed", "error") else TRUNCATED


KINDS: tuple[tuple[str, Callable[[Clients, str], str]], ...] = (
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
