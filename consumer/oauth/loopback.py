"""The loopback redirect server: receives Klaviyo's redirect on the redirect URL's host and port (RFC 8252 §7.3).

It answers only ``GET`` on the redirect URL's path (anything else, a browser's ``/favicon.ico`` say, gets 404),
hands the first redirect's target to ``wait()``, and tells the browser to go back to the terminal. The target
carries the one-time code: it is never logged. Port 0 in the redirect URL binds a free port (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("consumer.oauth.loopback")

_MAX_HEAD = 16 * 1024
_READ_TIMEOUT_S = 10.0
_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>ipaas-klaviyo</title></head><body>"
    "<h1>Klaviyo authorization received</h1><p>You can close this window and return to the terminal.</p>"
    "</body></html>"
)


class LoopbackReceiver:
    """``async with LoopbackReceiver(redirect_url) as receiver: ... await receiver.wait(timeout)``."""

    def __init__(self, redirect_url: str) -> None:
        parts = urlsplit(redirect_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"a loopback redirect URL must be http://<loopback host>:<port>/...: {redirect_url}")
        self._parts = parts
        self._host = parts.hostname
        self._port = parts.port if parts.port is not None else 80
        self._path = parts.path or "/"
        self._server: asyncio.Server | None = None
        self._received: asyncio.Future[str] | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def redirect_url(self) -> str:
        """The redirect URL, with the bound port when it was 0."""
        if self._port != 0 or self._server is None:
            return urlunsplit(self._parts)
        host = f"[{self._host}]" if ":" in self._host else self._host
        return urlunsplit((self._parts.scheme, f"{host}:{self.port}", self._parts.path, self._parts.query, ""))

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        if self._server is not None:
            return
        self._received = asyncio.get_running_loop().create_future()
        try:
            self._server = await asyncio.start_server(self._serve, self._host, self._port)
        except OSError as exc:
            raise ValueError(f"cannot listen on {self._host}:{self._port} for the redirect: {exc.strerror}") from None
        log.info("waiting for the Klaviyo redirect", extra={"redirect_url": self.redirect_url})

    async def wait(self, timeout_s: float) -> str:
        """The target (path and query) of the first redirect; ``TimeoutError`` when none came in time."""
        if self._received is None:
            raise RuntimeError("the loopback receiver is not started")
        async with asyncio.timeout(timeout_s):
            return await asyncio.shield(self._received)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        if self._received is not None and not self._received.done():
            self._received.cancel()

    async def __aenter__(self) -> LoopbackReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            status, body = await self._answer(reader)
            payload = body.encode()
            reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(status, "OK")
            head = (
                f"HTTP/1.1 {status} {reason}\r\n"
                "Content-Type: text/html; charset=utf-8\r\n"
                f"Content-Length: {len(payload)}\r\n"
                "Cache-Control: no-store\r\n"
                "Referrer-Policy: no-referrer\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + payload)
            await writer.drain()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._connections.discard(task)

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, str]:
        async with asyncio.timeout(_READ_TIMEOUT_S):
            head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _MAX_HEAD:
            return 400, "<h1>Bad request</h1>"
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3:
            return 400, "<h1>Bad request</h1>"
        method, target, _ = parts
        if urlsplit(target).path != self._path:
            return 404, "<h1>Not found</h1>"
        if method != "GET":
            return 405, "<h1>Method not allowed</h1>"
        if self._received is not None and not self._received.done():
            self._received.set_result(target)
            log.info("Klaviyo redirect received")
        return 200, _PAGE
