"""The server protocol puts a request body together as it arrives: in order, whole, in one piece or in many."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from typing import Any

import uvicorn

from gateway.api.server_protocol import ConnectionLimits, bounded_protocol

PIECE = 10 * 1024
BODY = bytes(range(256)) * (300 * 1024 // 256)  # 300 KiB: more than uvicorn holds before it stops reading


async def test_pieces_that_arrive_before_the_app_reads_reach_it_whole_and_in_order() -> None:
    release = asyncio.Event()
    received: list[bytes] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        await release.wait()  # busy elsewhere: the body's first pieces pile up in the connection
        while True:
            message = await receive()
            received.append(message["body"])
            if not message["more_body"]:
                break
        digest = hashlib.sha256(b"".join(received)).hexdigest().encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})
        await send({"type": "http.response.body", "body": digest})

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # a connection made before the server runs waits for it
    config = uvicorn.Config(app, lifespan="off", log_level="warning",
                            http=bounded_protocol(ConnectionLimits(30.0, 30.0, 16)))
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        reader, writer = await asyncio.open_connection(*listener.getsockname())
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(BODY))
        for start in range(0, len(BODY), PIECE):
            writer.write(BODY[start : start + PIECE])
            await writer.drain()
            await asyncio.sleep(0.002)  # each piece its own read on the server's side
        release.set()
        head = await reader.readuntil(b"\r\n\r\n")
        digest = await reader.readexactly(64)
        writer.close()
    finally:
        server.should_exit = True
        await serving
    assert head.startswith(b"HTTP/1.1 200")
    assert digest == hashlib.sha256(BODY).hexdigest().encode()
    assert len(received[0]) > PIECE  # the first read took several pieces that had piled up
