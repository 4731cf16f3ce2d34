"""Scaffolding the API simulators share (the Klaviyo and iPaaS.com look-alikes): what each system answers lives
with that system's simulator; this module holds what is the same for both.

``Latency`` (added response latency), the time box every simulator's faults have (``TimedFaults``: for ``for_s``
seconds, or until cleared), the fault draws every simulator makes (``operation_targeted``, ``connection_fault``,
``injected_status``), the request log (``RequestLog``: sequence numbers, recorded
requests, counters), the decoded body a recorded request keeps (``recorded_body``), the request handler's
outline (``RecordingApp``: admin, record, answer, add latency), the in-process server
lifecycle (``SimulatorServer``) and the standalone command's options and serve loop (``simulator_parser``,
``add_run_options``, ``serve_until_interrupted``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, Literal, Protocol, Self, TypeVar

import orjson
from pydantic import BaseModel, Field, PrivateAttr

from simulators.httpserver import Handler, HttpServer, Reply, Request


class Latency(BaseModel):
    """Added response latency: fixed, uniform (mean ± spread), normal (sd = spread) or exponential (mean)."""

    distribution: Literal["fixed", "uniform", "normal", "exponential"] = "fixed"
    mean_ms: float = Field(0.0, ge=0)
    spread_ms: float = Field(0.0, ge=0)

    def sample_s(self, rng: random.Random) -> float:
        if self.mean_ms <= 0 and self.spread_ms <= 0:
            return 0.0
        if self.distribution == "uniform":
            value = rng.uniform(self.mean_ms - self.spread_ms, self.mean_ms + self.spread_ms)
        elif self.distribution == "normal":
            value = rng.gauss(self.mean_ms, self.spread_ms)
        elif self.distribution == "exponential":
            value = rng.expovariate(1.0 / self.mean_ms) if self.mean_ms > 0 else 0.0
        else:
            value = self.mean_ms
        return max(value, 0.0) / 1000.0


# --- fault injection -------------------------------------------------------------------------------------------
class TimedFaults(BaseModel):
    """The time box of a simulator's faults: they apply for ``for_s`` seconds from when they are set (a new
    ``Faults`` value, in-process or over ``/__admin/faults``), or until cleared when ``for_s`` is None.

    Latency is not a fault: it applies either way."""

    for_s: float | None = Field(None, gt=0)
    _set_at: float = PrivateAttr(default_factory=time.monotonic)

    @property
    def ends_at(self) -> float | None:
        """When the faults stop applying (``time.monotonic()``), or None: until cleared."""
        return None if self.for_s is None else self._set_at + self.for_s

    def active(self) -> bool:
        """Whether the faults apply now."""
        ends_at = self.ends_at
        return ends_at is None or time.monotonic() < ends_at


class SharedFaults(Protocol):
    """The fault-injection settings every simulator's ``Faults`` model has."""

    error_rates: dict[int, float]
    fail_next: list[int]
    drop_next: int
    drop_rate: float
    hang_next: int
    hang_s: float
    operations: list[str] | None

    def active(self) -> bool: ...


def operation_targeted(faults: SharedFaults, operation: str) -> bool:
    """Whether faults (other than latency) apply to ``operation`` now: within their time box, and ``operations``
    unset (every operation) or naming it."""
    return faults.active() and (faults.operations is None or operation in faults.operations)


def connection_fault(
    faults: SharedFaults, rng: random.Random, *, hang_rate: float = 0.0
) -> tuple[str, Reply] | None:
    """A dropped or hanging connection, if one is due: ``("drop"|"hang", reply)``; consumes a ``*_next``."""
    if faults.drop_next > 0 or (faults.drop_rate and rng.random() < faults.drop_rate):
        faults.drop_next = max(faults.drop_next - 1, 0)
        return "drop", Reply(0, action="drop")
    if faults.hang_next > 0 or (hang_rate and rng.random() < hang_rate):
        faults.hang_next = max(faults.hang_next - 1, 0)
        return "hang", Reply(0, action="hang", delay_s=faults.hang_s)
    return None


def injected_status(faults: SharedFaults, rng: random.Random) -> int | None:
    """The HTTP status to inject next: the head of ``fail_next``, else one drawn from ``error_rates``."""
    if faults.fail_next:
        return faults.fail_next.pop(0)
    if faults.error_rates:
        draw = rng.random()
        for candidate, probability in faults.error_rates.items():
            draw -= probability
            if draw < 0:
                return int(candidate)
    return None


# --- the request log -------------------------------------------------------------------------------------------
class Recorded(Protocol):
    """What the request log reads of a recorded request."""

    @property
    def operation(self) -> str | None: ...

    @property
    def status(self) -> int | None: ...

    @property
    def fault(self) -> str | None: ...


R = TypeVar("R", bound=Recorded)


class RequestLog(Generic[R]):
    """Sequence numbers, recorded requests and counters, for a simulator state that holds ``requests``,
    ``stats`` and ``_seq``."""

    __slots__ = ()

    requests: deque[R]
    stats: Counter[str]
    _seq: int

    def next_seq(self) -> int:
        self._seq += 1  # type: ignore[misc]  # a slot of the (slotted dataclass) subclass
        return self._seq

    def record(self, received: R) -> None:
        self.requests.append(received)
        self.stats["requests"] += 1
        self.stats[f"status:{received.status}"] += 1
        if received.operation:
            self.stats[f"operation:{received.operation}"] += 1
        self.count(received)
        if received.fault:
            self.stats[f"fault:{received.fault}"] += 1

    def count(self, received: R) -> None:
        """Counters of one simulator's own (after the operation's, before the fault's)."""

    def received(self, operation: str | None = None) -> list[R]:
        """Recorded requests, optionally of one operation."""
        return [r for r in self.requests if operation is None or r.operation == operation]


def recorded_body(body: bytes) -> Any:
    """A request body as the log keeps it: its JSON, else its first 2 KiB as text (None when empty)."""
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:2048].decode("utf-8", "replace")


# --- the request handler ---------------------------------------------------------------------------------------
class Answered(Protocol):
    """A recorded request, as the handler completes it."""

    status: int | None


A = TypeVar("A", bound=Answered)
A_contra = TypeVar("A_contra", bound=Answered, contravariant=True)


class _WithLatency(Protocol):
    @property
    def latency(self) -> Latency: ...


class RecordingState(Protocol[A_contra]):
    """What the handler's outline uses of a simulator state."""

    @property
    def faults(self) -> _WithLatency: ...

    @property
    def rng(self) -> random.Random: ...

    def record(self, received: A_contra) -> None: ...


class RecordingApp(ABC, Generic[A]):
    """The outline of a simulator's request handler (the HTTP server calls it): ``/__admin`` requests go to
    ``_admin_reply``; every other request is recorded (``_receive``), answered (``_handle``; an exception it
    raises is answered by ``_failed``), counted in the log, and delayed by the configured latency."""

    state: RecordingState[A]

    async def __call__(self, request: Request) -> Reply:
        if request.path.startswith("/__admin"):
            return self._admin_reply(request)
        state = self.state
        received = self._receive(request)
        try:
            reply = self._handle(request, received)
        except Exception as exc:  # _failed answers the system's own errors, and 500 for any other
            reply = self._failed(exc)
        received.status = reply.status if reply.action == "respond" else None
        state.record(received)
        reply.delay_s += state.faults.latency.sample_s(state.rng)
        return reply

    @abstractmethod
    def _admin_reply(self, request: Request) -> Reply:
        """The answer to an admin request."""

    @abstractmethod
    def _receive(self, request: Request) -> A:
        """The record of an API request (no credentials)."""

    @abstractmethod
    def _handle(self, request: Request, received: A) -> Reply:
        """The answer to an API request."""

    @abstractmethod
    def _failed(self, exc: Exception) -> Reply:
        """The answer when ``_handle`` raised ``exc`` (called while it is being handled)."""


# --- the in-process server -------------------------------------------------------------------------------------
class SimulatorServer:
    """A simulator's HTTP server on ``host:port`` (port 0: a free one), as an async context manager.

    ``refuse_connections`` takes it off the network (connecting is refused: nothing listens on its port) for a
    while or until ``accept_connections``; ``accepting`` is set while it listens, and ``accepting_since`` says
    since when (``time.monotonic()``).
    """

    def __init__(self, handler: Handler, *, host: str, port: int, max_body: int) -> None:
        self._server = HttpServer(handler, host, port, max_body=max_body)
        self._host = host
        self._running = False
        self._offline = False
        self._reopen: asyncio.Task[None] | None = None
        self.accepting = asyncio.Event()
        self.accepting_since: float | None = None

    async def start(self) -> None:
        await self._server.start()
        self._running = True
        self.accepting_since = time.monotonic()
        self.accepting.set()

    async def stop(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reopen
            self._reopen = None
        if self._running:
            if not self._offline:
                await self._server.stop()
            self._running = False
            self._offline = False
            self.accepting.clear()

    async def refuse_connections(self, for_s: float | None = None) -> None:
        """Close the listening socket and every open connection, for ``for_s`` seconds (None: until
        ``accept_connections()``); the port stays the same."""
        if not self._running or self._offline:
            raise RuntimeError("the simulator is not accepting connections")
        self._offline = True
        self.accepting.clear()
        await self._server.stop()
        if for_s is not None:
            self._reopen = asyncio.get_running_loop().create_task(self._accept_after(for_s))

    async def _accept_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._reopen = None
        await self.accept_connections()

    async def accept_connections(self) -> None:
        """Listen again on the same port (after ``refuse_connections``)."""
        if not self._offline:
            return
        if self._reopen is not None and self._reopen is not asyncio.current_task():
            self._reopen.cancel()
            self._reopen = None
        await self._server.start()
        self._offline = False
        self.accepting_since = time.monotonic()
        self.accepting.set()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"


# --- the standalone command ------------------------------------------------------------------------------------
def simulator_parser(prog: str, description: str | None, default_port: int) -> argparse.ArgumentParser:
    """The command's parser with ``--host`` and ``--port``; the simulator adds its options, then
    ``add_run_options``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port, help="0 picks a free port (printed on start)")
    return parser


def add_run_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--latency-ms`` and ``--seed``."""
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added latency per response")
    parser.add_argument("--seed", type=int, default=None)
    return parser


S = TypeVar("S", bound=SimulatorServer)


def serve_until_interrupted(
    simulator: Callable[[], S], name: str, *, latency_ms: float, set_latency: Callable[[S, Latency], None]
) -> int:
    """Run the simulator ``simulator()`` builds until Ctrl-C, with ``latency_ms`` of added latency per response
    (``set_latency`` installs it); prints ``"<name> simulator listening on <url>"`` once it is up."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def run() -> None:
        async with simulator() as running:
            if latency_ms:
                set_latency(running, Latency(mean_ms=latency_ms))
            print(f"{name} simulator listening on {running.base_url}", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0
