"""The minimal HTTP/1.1 server: keep-alive, bodies, drops, hangs, stop."""

from __future__ import annotations

import asyncio

from simulators.httpserver import HttpServer, Reply, Request


async def start(handler: object, max_body: int = 1024) -> HttpServer:
    server = HttpServer(handler, max_body=max_body)  # type: ignore[arg-type]
    await server.start()
    return server


async def roundtrip(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    seen: list[Request] = []

    async def handler(request: Request) -> Reply:
        seen.append(request)
        return Reply(200, request.body or request.path.encode(), "text/plain")

    server = await start(handler)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /a?x=1&x=2&y=%2B HTTP/1.1\r\nHost: h\r\n\r\n"
                     b"POST /b HTTP/1.1\r\nContent-Length: 5\r\nX-Dup: 1\r\nX-Dup: 2\r\n\r\nhello")
        await writer.drain()
        first = await reader.readuntil(b"/a")
        second = await reader.readuntil(b"hello")
        writer.close()
        assert first.startswith(b"HTTP/1.1 200 OK") and b"connection: keep-alive" in first
        assert second.startswith(b"HTTP/1.1 200 OK")
        assert seen[0].query == {"x": ["1", "2"], "y": ["+"]} and seen[0].param("x") == "2"
        assert seen[1].headers["x-dup"] == "1, 2" and seen[1].body == b"hello"
    finally:
        await server.stop()


async def test_chunked_body_connection_close_and_oversize() -> None:
    async def handler(request: Request) -> Reply:
        return Reply(413 if request.oversize else 200, request.body, "text/plain")

    server = await start(handler, max_body=8)
    try:
        chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        data = await roundtrip(server.port, chunked + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"abcde") and b"connection: close" in data
        data = await roundtrip(server.port, b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 413")
        assert (await roundtrip(server.port, b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
    finally:
        await server.stop()


async def test_drop_and_hang_and_stop_ends_hanging_connections() -> None:
    hanging = asyncio.Event()

    async def handler(request: Request) -> Reply:
        if request.path == "/drop":
            return Reply(0, action="drop")
        hanging.set()
        return Reply(0, action="hang", delay_s=3600)

    server = await start(handler)
    assert await roundtrip(server.port, b"GET /drop HTTP/1.1\r\n\r\n") == b""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /hang HTTP/1.1\r\n\r\n")
    await writer.drain()
    pending = asyncio.create_task(reader.read())
    await hanging.wait()
    for _ in range(20):
        await asyncio.sleep(0)
    assert not pending.done()
    await server.stop()
    assert await asyncio.wait_for(pending, 5) == b""
    writer.close()
