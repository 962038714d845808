"""Ending a request early: when its client disconnects, or when a shutdown drain runs out of time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from starlette.types import Receive, Scope

from gateway.api.body_writer import nothing, watch_disconnect
from gateway.errors import ClientGoneError, PolyrouteError, ShuttingDownError
from gateway.runtime import Drain

T = TypeVar("T")


async def _until_disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class _Watch:
    """Runs `_until_disconnected` beside the request without a task of its own, then calls `on_disconnect`.

    It steps the coroutine the way an asyncio Task does (resumed when the future it waits on is done, or on the next
    loop turn after a bare yield), without what a Task costs on every request: creation, registration, a loop turn to
    start, another to cancel. `stop` closes the coroutine where it waits, so its cleanup runs at once.
    """

    __slots__ = ("_coro", "_on_disconnect", "_waiting")

    def __init__(self, receive: Receive, on_disconnect: Callable[[], None]) -> None:
        self._coro: Coroutine[Any, Any, None] | None = _until_disconnected(receive)
        self._on_disconnect = on_disconnect
        self._waiting: asyncio.Future[Any] | None = None
        self._step()

    def _step(self, _: object = None) -> None:
        coro = self._coro
        if coro is None:
            return
        self._waiting = None
        try:
            awaited = coro.send(None)
        except StopIteration:
            self._coro = None
            self._on_disconnect()
            return
        except BaseException:  # the server's receive failed: nothing to watch any more, and the failure is shown
            self._coro = None
            raise
        if awaited is None:  # a bare yield, as in asyncio.sleep(0)
            asyncio.get_running_loop().call_soon(self._step)
        elif getattr(awaited, "_asyncio_future_blocking", None) is not None:
            awaited._asyncio_future_blocking = False
            self._waiting = awaited
            awaited.add_done_callback(self._step)
        else:
            self._coro = None
            coro.close()
            raise RuntimeError(f"receive() awaited {type(awaited).__name__}, not an asyncio future")

    def stop(self) -> None:
        # The callback is the guard's own method, and the guard holds this watch: let go of it, so that the request's
        # guard, task and coroutine are freed when it ends, not left as a cycle for the garbage collector.
        self._on_disconnect = nothing
        coro, self._coro = self._coro, None
        if coro is not None:
            if self._waiting is not None:
                self._waiting.remove_done_callback(self._step)
                self._waiting = None
            coro.close()


class Guard:
    """Cancels a request's task when its client disconnects or the drain deadline passes, until disarmed.

    One per request, for the upstream attempts and the whole relay of a stream: a single watcher reads the next
    ASGI message, which can only be the disconnect once the body was read (so create it after reading the body).
    The task is cancelled rather than asked at every event, so that a stream pays nothing per relayed event; the
    code that catches the CancelledError asks `reason` whether the cancellation was this guard's (and why).
    """

    def __init__(self, receive: Receive, drain: Drain, scope: Scope | None = None) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._stopped: PolyrouteError | None = None  # why the task was cancelled, until `reason` consumes it
        self._fired = False  # the task is cancelled at most once
        self._armed = True
        # The server's own watch on the connection when it offers one (api/body_writer.py), else the next message.
        stop = watch_disconnect(scope, self._on_disconnect) if scope is not None else None
        self._unwatch = stop if stop is not None else _Watch(receive, self._on_disconnect).stop
        self._passed = drain.passed
        self._passed.add_done_callback(self._on_deadline)

    def _stop(self, why: PolyrouteError) -> None:
        if self._armed and not self._fired:
            self._fired = True
            self._stopped = why
            self._task.cancel()

    def _on_disconnect(self) -> None:
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
            unwatch, self._unwatch = self._unwatch, nothing  # it may hold this guard's method: let go of it
            unwatch()
