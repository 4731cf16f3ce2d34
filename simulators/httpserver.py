"""A minimal asyncio HTTP/1.1 server for the simulators: keep-alive, Content-Length and chunked bodies, no framework.

It parses a request, hands it to an async handler and writes the handler's ``Reply``. A reply can also ask
the server to drop the connection without answering, or to hang (for timeout tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

logger = logging.getLogger("simulators.httpserver")

_HEAD_LIMIT = 64 * 1024


@dataclass(slots=True)
class Request:
    """A parsed request. Header names are lower-case; repeated headers are joined with ``", "``."""

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    oversize: bool = False

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass(slots=True)
class Reply:
    """What to send back. ``action`` "drop" closes the connection unanswered; "hang" stalls ``delay_s`` first."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    action: Literal["respond", "drop", "hang"] = "respond"
    delay_s: float = 0.0
    close: bool = False


Handler = Callable[[Request], Awaitable[Reply]]


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class HttpServer:
    """Serves ``handler`` on ``host:port`` (port 0 picks a free one) until ``stop()``."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0, *, max_body: int) -> None:
        self._handler = handler
        self._host = host
        self._port = port
        self._max_body = max_body
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the server is not running")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen; a server started again (after ``stop()``) listens on the port it had."""
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=_HEAD_LIMIT, backlog=1024, reuse_address=True
        )
        self._port = self.port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # pragma: no cover - a handler bug must not kill the server
            logger.exception("simulator connection failed")
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection should end."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        except asyncio.LimitOverrunError:
            await self._write(writer, Reply(431, b"request head too large", "text/plain"), keep_alive=False)
            return False
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            await self._write(writer, Reply(400, b"bad request line", "text/plain"), keep_alive=False)
            return False
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection

        body = b""
        oversize = False
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body, oversize = await self._read_chunked(reader)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                await self._write(writer, Reply(400, b"bad content-length", "text/plain"), keep_alive=False)
                return False
            if length > self._max_body:
                oversize = True
            else:
                body = await reader.readexactly(length)
        split = urlsplit(target)
        request = Request(
            method=method.upper(),
            target=target,
            path=unquote(split.path) or "/",
            query=parse_qs(split.query, keep_blank_values=True),
            headers=headers,
            body=body,
            oversize=oversize,
        )
        reply = await self._handler(request)
        if reply.action == "drop":
            writer.transport.abort()
            return False
        if reply.action == "hang":
            await asyncio.sleep(reply.delay_s)
            writer.transport.abort()
            return False
        if reply.delay_s > 0:
            await asyncio.sleep(reply.delay_s)
        keep_alive = keep_alive and not reply.close and not oversize
        await self._write(writer, reply, keep_alive=keep_alive)
        return keep_alive

    async def _read_chunked(self, reader: asyncio.StreamReader) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                break
            total += size
            chunk = await reader.readexactly(size + 2)
            if total <= self._max_body:
                parts.append(chunk[:-2])
        return b"".join(parts), total > self._max_body

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, reply: Reply, *, keep_alive: bool) -> None:
        head = [f"HTTP/1.1 {reply.status} {_phrase(reply.status)}"]
        if reply.content_type:
            head.append(f"content-type: {reply.content_type}")
        head.append(f"content-length: {len(reply.body)}")
        head.extend(f"{name}: {value}" for name, value in reply.headers)
        head.append("connection: keep-alive" if keep_alive else "connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body)
        await writer.drain()
