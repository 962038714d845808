"""The simple Python ceiling: a minimal FastAPI + aiohttp pass-through (one shared session, bytes relayed as they come).

Run: BENCH_UPSTREAM=http://127.0.0.1:9000 uvicorn bench.passthrough:app --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:9000")
# As many upstream connections as polyroute's bench policy allows (`max_connections`), so long-lived streams queue
# in neither.
MAX_CONNECTIONS = 4096
session: dict[str, aiohttp.ClientSession] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    session["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS))
    yield
    await session["s"].close()


app = FastAPI(lifespan=lifespan)


@app.post("/v1/chat/completions")
@app.post("/v1/messages")
async def chat(request: Request) -> Response:
    body = await request.body()
    resp = await session["s"].post(UPSTREAM + request.url.path, data=body,
                                   headers={"content-type": "application/json"})
    if not resp.headers.get("content-type", "").startswith("text/event-stream"):
        data = await resp.read()
        return Response(data, status_code=resp.status, media_type=resp.headers.get("content-type"))

    async def relay() -> AsyncIterator[bytes]:
        async with resp:
            async for chunk in resp.content.iter_any():
                yield chunk

    return StreamingResponse(relay(), status_code=resp.status, media_type="text/event-stream")
