"""Ending a request early: when its client disconnects, or when a shutdown drain runs out of time."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Awaitable
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
        loop.call_at(self.deadline, self._deadline_passed)

    def _deadline_passed(self) -> None:
        if not self.passed.done():
            self.passed.set_result(None)

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


class Guard:
    """Cancels a request's task when its client disconnects or the drain deadline passes, until disarmed.

    One per request, for the upstream attempts and the whole relay of a stream: a single watcher task reads the next
    ASGI message, which can only be the disconnect once the body was read (so create it after reading the body).
    The task is cancelled rather than asked at every event, so that a stream pays nothing per relayed event; the
    code that catches the CancelledError asks `reason` whether the cancellation was this guard's (and why).
    """

    def __init__(self, receive: Receive, drain: Drain) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._stopped: PolyrouteError | None = None  # why the task was cancelled, until `reason` consumes it
        self._fired = False  # the task is cancelled at most once
        self._armed = True
        self._watcher = asyncio.create_task(_until_disconnected(receive))
        self._watcher.add_done_callback(self._on_disconnect)
        self._passed = drain.passed
        self._passed.add_done_callback(self._on_deadline)

    def _stop(self, why: PolyrouteError) -> None:
        if self._armed and not self._fired:
            self._fired = True
            self._stopped = why
            self._task.cancel()

    def _on_disconnect(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is None:
            self._stop(ClientGoneError())

    def _on_deadline(self, _: Any) -> None:
        self._stop(ShuttingDownError())

    def reason(self) -> PolyrouteError | None:
        """Called on a CancelledError: why this guard cancelled the task (the cancellation is then consumed), or
        None when the cancellation came from elsewhere and must propagate."""
        why, self._stopped = self._stopped, None
        if why is not None and self._task.uncancel() == 0:
            return why
        return None

    async def watch(self, work: Awaitable[T]) -> T:
        """Await `work`; ClientGoneError or ShuttingDownError instead when the guard stops it."""
        try:
            return await work
        except asyncio.CancelledError:
            why = self.reason()
            if why is not None:
                raise why from None
            raise

    def disarm(self) -> None:
        """From here on nothing is cancelled (call it before the last send: the server then reports a disconnect)."""
        if self._armed:
            self._armed = False
            self._passed.remove_done_callback(self._on_deadline)
            self._watcher.cancel()
