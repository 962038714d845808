"""Ending a request early: when its client disconnects, or when a shutdown drain runs out of time."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable
from types import FrameType
from typing import Any, TypeVar

from starlette.types import Receive

from gateway.errors import ClientGoneError, PolyrouteError, ShuttingDownError

T = TypeVar("T")
log = logging.getLogger("polyroute.shutdown")
# Streams are cut this long before the server's own deadline, so they can still send their error event.
_MARGIN_S = 1.0


class Drain:
    """From SIGTERM on, in-flight requests may finish until a deadline; what is left then ends with a 503/SSE error.

    uvicorn stops accepting connections and waits `timeout_graceful_shutdown` for the open ones; after that it
    cancels them, and a stream cut by cancellation could no longer say why. So the gateway keeps its own
    deadline a little earlier and ends what is still open itself.
    """

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.deadline: float | None = None  # loop time; None until the drain begins
        self._waiting: set[asyncio.Timeout] = set()
        self._passed: asyncio.Future[None] | None = None

    @property
    def passed(self) -> asyncio.Future[None]:
        """Done when the drain deadline has passed (never, unless a drain began)."""
        if self._passed is None:
            self._passed = asyncio.get_running_loop().create_future()
        return self._passed

    def begin(self) -> None:
        """Start the drain (idempotent): streams and requests still open at the deadline are ended."""
        if self.deadline is not None:
            return
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + max(0.0, self.grace_s - min(_MARGIN_S, self.grace_s / 4))
        log.info("draining in-flight requests for up to %.1fs", self.deadline - loop.time())
        for cutoff in self._waiting:
            cutoff.reschedule(self.deadline)
        loop.call_at(self.deadline, self._deadline_passed)

    def _deadline_passed(self) -> None:
        if not self.passed.done():
            self.passed.set_result(None)

    async def next_event(self, events: AsyncIterator[bytes]) -> bytes | None:
        """The next event of a stream, None at its end; ShuttingDownError if the drain deadline comes first."""
        cutoff = asyncio.timeout_at(self.deadline)
        try:
            async with cutoff:
                self._waiting.add(cutoff)
                return await anext(events, None)
        except TimeoutError:
            if cutoff.expired():  # only our own cutoff; a TimeoutError from below is not ours to rename
                raise ShuttingDownError() from None
            raise
        finally:
            self._waiting.discard(cutoff)

    def on_sigterm(self) -> None:
        """Chain a SIGTERM handler in front of the server's own (which stops accepting and waits)."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(self.begin)
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, handler)


async def _until_disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def guarded(work: Awaitable[T], receive: Receive, drain: Drain) -> T:
    """Await `work` (the upstream attempts); cancel it when the client disconnects or the drain deadline passes.

    Raises ClientGoneError or ShuttingDownError then. Must be called after the request body was read, so that
    the next ASGI message can only be the disconnect.
    """
    current = asyncio.current_task()
    assert current is not None
    stopped: list[PolyrouteError] = []
    finished = False

    def stop(why: PolyrouteError) -> None:
        if not finished and not stopped:
            stopped.append(why)
            current.cancel()

    def on_disconnect(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is None:
            stop(ClientGoneError())

    def on_deadline(_: Any) -> None:
        stop(ShuttingDownError())

    watcher = asyncio.create_task(_until_disconnected(receive))
    watcher.add_done_callback(on_disconnect)
    passed = drain.passed
    passed.add_done_callback(on_deadline)
    try:
        return await work
    except asyncio.CancelledError:
        if stopped and current.uncancel() == 0:
            raise stopped[0] from None
        raise
    finally:
        finished = True
        passed.remove_done_callback(on_deadline)
        watcher.cancel()
