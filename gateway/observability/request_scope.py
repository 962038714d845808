"""The routing facts of the request being served, noted where they are read and picked up where usage is recorded.

A context variable, because the proxy hands accounting a FinishedRequest without the request's facts: asyncio gives
every request task its own context, so what one request notes is never seen by another. Passing the facts in
FinishedRequest explicitly would make this module unnecessary.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from gateway.policy.plan import RequestFacts

_NOTED: ContextVar[tuple[RequestFacts, Mapping[str, Any]] | None] = ContextVar("polyroute_request", default=None)


def note_request(facts: RequestFacts, body: Mapping[str, Any]) -> None:
    """Remember the facts and the body of the request this task serves (O(1): nothing is copied)."""
    _NOTED.set((facts, body))


def noted_request() -> tuple[RequestFacts, Mapping[str, Any]] | None:
    return _NOTED.get()
