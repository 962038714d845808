"""What each load run sends: the small chat requests, and coding-agent requests (long bodies, long streams)."""

from __future__ import annotations

import json
from dataclasses import dataclass

KIB = 1024
_CODE = (
    "def route(request, table, health):\n"
    "    # pick the first eligible deployment; every excluded target is named in the trace\n"
    "    for target in table.targets(request.alias):\n"
    "        if health.open(target):\n"
    "            continue\n"
    "        return target\n"
)


@dataclass(frozen=True)
class Workload:
    """One kind of request: its path, whether it streams, and roughly how large its body is.

    `native` requests go to polyroute's alias whose provider speaks the protocol itself (relayed, not translated).
    """

    name: str
    title: str
    path: str = "/v1/chat/completions"
    stream: bool = False
    size: int = 0  # bytes of system prompt and history to add (0: the small request)
    max_tokens: int = 32
    native: bool = False
    agent: bool = False  # a coding-agent workload (run at fewer concurrencies)

    def body(self, model: str) -> bytes:
        messages, system = _history(self.size)
        data: dict[str, object] = {"model": model, "max_tokens": self.max_tokens}
        if self.path == "/v1/messages":
            if system:
                data["system"] = system
            data["messages"] = messages
        else:
            data["messages"] = ([{"role": "system", "content": system}] if system else []) + messages
        if self.stream:
            data["stream"] = True
        return json.dumps(data, separators=(",", ":")).encode()


def _history(size: int) -> tuple[list[dict[str, str]], str]:
    """A long system prompt (half the size) and a history of user/assistant turns (the other half), as an agent
    sends them; the last turn asks the question."""
    ask = {"role": "user", "content": "Say a few words for the benchmark."}
    if not size:
        return [ask], ""
    system = (_CODE * (size // 2 // len(_CODE) + 1))[: size // 2]
    turns: list[dict[str, str]] = []
    left = size - len(system)
    turn = _CODE * 8
    while left > 0:
        content = turn[:left]
        turns.append({"role": "user" if len(turns) % 2 == 0 else "assistant", "content": content})
        left -= len(content)
    if turns and turns[-1]["role"] == "user":
        turns.append({"role": "assistant", "content": "Done."})
    return [*turns, ask], system


NON_STREAM = Workload("non-stream", "chat, small, non-stream")
STREAM = Workload("stream", "chat, small, stream (20 chunks)", stream=True)
CHAT_100K = Workload("chat-100k", "chat, 100 KiB body", size=100 * KIB, agent=True)
CHAT_1M = Workload("chat-1m", "chat, 1 MiB body", size=1024 * KIB, agent=True)
MESSAGES_100K = Workload(
    "messages-100k", "/v1/messages, 100 KiB, translated to chat", path="/v1/messages", size=100 * KIB, agent=True
)
MESSAGES_100K_RELAYED = Workload(
    "messages-100k-relayed", "/v1/messages, 100 KiB, relayed to a Messages upstream", path="/v1/messages",
    size=100 * KIB, native=True, agent=True,
)
STREAM_2000 = Workload("stream-2000", "chat stream of 2,000 chunks", stream=True, max_tokens=2000, agent=True)
SMALL = (NON_STREAM, STREAM)
AGENT = (CHAT_100K, CHAT_1M, MESSAGES_100K, MESSAGES_100K_RELAYED, STREAM_2000)
