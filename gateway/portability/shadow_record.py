"""`shadow.record: FILE`: compared pairs appended as JSONL for offline evaluation, off the event loop, bounded."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("polyroute.shadow")
RECORD_QUEUE = 1000  # pairs waiting to be written; past it a pair is dropped (and counted), never awaited
_BATCH = 100


class PairRecorder:
    """One per record file: `offer` never waits; a background task appends what was queued."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(RECORD_QUEUE)
        self._task: asyncio.Task[None] | None = None

    def offer(self, pair: dict[str, Any]) -> bool:
        """Queue one pair; False when the queue is full (the pair is dropped)."""
        if self._task is None:
            self._task = asyncio.create_task(self._write_forever(), name="polyroute-shadow-record")
        try:
            self._queue.put_nowait(pair)
        except asyncio.QueueFull:
            return False
        return True

    async def close(self) -> None:
        """Write out what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await asyncio.to_thread(self._append, b"".join(orjson.dumps(p) + b"\n" for p in batch))
            except OSError as err:
                log.error("cannot append shadow pairs to %s: %s", self.path, err.strerror)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _append(self, lines: bytes) -> None:
        with self.path.open("ab") as out:
            out.write(lines)
