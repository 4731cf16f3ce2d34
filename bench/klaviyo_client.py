"""Klaviyo client benchmark against the simulator (run as a separate process on 127.0.0.1).

Prints the numbers and writes them to bench/results/klaviyo_client.json. Usage: ``python bench/klaviyo_client.py``
(``--quick`` for a smoke run). Every scenario sends ``create_event`` calls through ``KlaviyoClient``:

* throughput with rate limits off (simulator quotas off, client limiter off) at 0 ms and 100 ms added latency,
  next to bare httpx at 0 ms (the client's own overhead);
* throughput with rate limits on (Klaviyo's create_event quota: 350/s burst, 3500/min steady; client limiter on)
  at 0 ms and 100 ms;
* offered load at 3x the limit (open loop): the share of 429 answers, with the real quota (burst binds) and with
  a scaled quota whose steady window binds (50/s burst, 150 per 5 s steady; the minute shrunk to 5 s to keep the
  run short). Target: < 1 % 429s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from consumer.klaviyo import ApiKeyAuth, KlaviyoClient, NewEvent, ProfileAttributes  # noqa: E402
from consumer.klaviyo.ratelimits import EndpointLimit  # noqa: E402
from consumer.settings import KlaviyoSettings  # noqa: E402
from simulators.klaviyo import DEFAULT_API_KEY  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "klaviyo_client.json"
REAL = EndpointLimit(350, 3500)
SCALED = EndpointLimit(50, 150, burst_window_s=1.0, steady_window_s=5.0)


@dataclass
class Result:
    scenario: str
    latency_ms: float
    limits: str
    requests: int
    seconds: float
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    server_requests: int
    throttled_429: int
    share_429_pct: float
    offered_rps: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)


class Simulator:
    """The simulator as a child process, configured over its admin endpoint."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.base_url = ""

    async def __aenter__(self) -> Simulator:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "simulators.klaviyo", "--port", "0", "--seed", "1",
            stdout=asyncio.subprocess.PIPE, cwd=str(ROOT),
        )
        assert self.process.stdout is not None
        line = (await asyncio.wait_for(self.process.stdout.readline(), 60)).decode()
        self.base_url = line.rsplit(" ", 1)[-1].strip()
        self.admin = httpx.AsyncClient(base_url=self.base_url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.admin.aclose()
        if self.process is not None:
            self.process.terminate()
            await self.process.wait()

    async def configure(self, *, limits: EndpointLimit | None, latency_ms: float) -> None:
        await self.admin.post("/__admin/reset")
        config: dict[str, Any] = {"rate_limits_enabled": limits is not None}
        if limits is not None:
            config["rate_limits"] = {"create_event": asdict(limits)}
        (await self.admin.post("/__admin/config", json=config)).raise_for_status()
        faults = {"latency": {"distribution": "fixed", "mean_ms": latency_ms}}
        (await self.admin.put("/__admin/faults", json=faults)).raise_for_status()

    async def stats(self) -> dict[str, int]:
        return dict((await self.admin.get("/__admin/stats")).json())


def event(i: int) -> NewEvent:
    return NewEvent(
        metric="Placed Order", profile=ProfileAttributes(email=f"bench{i % 500}@shop.test"), unique_id=f"ORD-{i}",
        value=42.5, value_currency="USD", properties={"OrderId": f"ORD-{i}", "ItemNames": ["Hat", "Scarf"]},
    )


def client_for(base_url: str, *, limited: bool, limits: EndpointLimit | None) -> KlaviyoClient:
    settings = KlaviyoSettings(base_url=base_url, api_key=DEFAULT_API_KEY, rate_limit=limited, max_retries=8,
                               max_connections=100)
    return KlaviyoClient(settings, ApiKeyAuth(DEFAULT_API_KEY),
                         rate_limits={"create_event": limits} if limits else None)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def closed_loop(sim: Simulator, name: str, *, count: int, concurrency: int, latency_ms: float,
                      limits: EndpointLimit | None) -> Result:
    await sim.configure(limits=limits, latency_ms=latency_ms)
    latencies: list[float] = []
    queue = iter(range(count))
    async with client_for(sim.base_url, limited=limits is not None, limits=limits) as client:
        await client.create_event(event(-1))  # warm the pool and the spec validators
        await sim.admin.post("/__admin/reset")

        async def worker() -> None:
            for i in queue:
                started = time.perf_counter()
                await client.create_event(event(i))
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return await _result(sim, name, count, elapsed, latencies, latency_ms, limits, notes={"concurrency": concurrency})


async def bare_httpx(sim: Simulator, *, count: int, concurrency: int) -> Result:
    await sim.configure(limits=None, latency_ms=0)
    headers = {"authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}", "revision": "2026-07-15",
               "content-type": "application/vnd.api+json"}
    from consumer.klaviyo.models import EventCreateQuery

    latencies: list[float] = []
    queue = iter(range(count))
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=sim.base_url, headers=headers, limits=limits) as http:
        async def worker() -> None:
            for i in queue:
                begun = time.perf_counter()
                response = await http.post("/api/events", content=orjson.dumps(EventCreateQuery.build(event(i))
                                                                              .to_dict()))
                assert response.status_code == 202
                latencies.append(time.perf_counter() - begun)

        await http.post("/__admin/reset")
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return await _result(sim, "bare httpx (baseline)", count, elapsed, latencies, 0, None,
                         notes={"concurrency": concurrency})


async def open_loop(sim: Simulator, name: str, *, count: int, offered_rps: float, limits: EndpointLimit) -> Result:
    await sim.configure(limits=limits, latency_ms=0)
    latencies: list[float] = []
    async with client_for(sim.base_url, limited=True, limits=limits) as client:

        async def one(i: int) -> None:
            begun = time.perf_counter()
            await client.create_event(event(i))
            latencies.append(time.perf_counter() - begun)

        started = time.perf_counter()
        tasks = []
        for i in range(count):
            tasks.append(asyncio.create_task(one(i)))
            next_at = started + (i + 1) / offered_rps
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    result = await _result(sim, name, count, elapsed, latencies, 0, limits, notes={"limit": asdict(limits)})
    result.offered_rps = offered_rps
    return result


async def _result(sim: Simulator, name: str, count: int, elapsed: float, latencies: list[float], latency_ms: float,
                  limits: EndpointLimit | None, notes: dict[str, Any]) -> Result:
    stats = await sim.stats()
    received = stats.get("operation:create_event", 0)
    throttled = stats.get("throttled", 0)
    return Result(
        scenario=name, latency_ms=latency_ms,
        limits="off" if limits is None else f"{limits.burst}/{limits.burst_window_s:g}s, "
                                            f"{limits.steady}/{limits.steady_window_s:g}s",
        requests=count, seconds=round(elapsed, 3), throughput_rps=round(count / elapsed, 1),
        p50_ms=round(statistics.median(latencies) * 1000, 2) if latencies else 0.0,
        p99_ms=round(percentile(latencies, 0.99) * 1000, 2), server_requests=received, throttled_429=throttled,
        share_429_pct=round(100 * throttled / received, 3) if received else 0.0, notes=notes,
    )


def markdown(results: list[Result]) -> str:
    lines = ["| scenario | latency | limits | requests | seconds | req/s | p50 ms | p99 ms | 429s | 429 share |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        offered = f" (offered {r.offered_rps:g}/s)" if r.offered_rps else ""
        lines.append(f"| {r.scenario}{offered} | {r.latency_ms:g} ms | {r.limits} | {r.requests} | {r.seconds} | "
                     f"{r.throughput_rps} | {r.p50_ms} | {r.p99_ms} | {r.throttled_429} | {r.share_429_pct}% |")
    return "\n".join(lines)


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


async def main(quick: bool) -> dict[str, Any]:
    scale = 0.2 if quick else 1.0
    n = lambda value: max(int(value * scale), 10)  # noqa: E731
    results: list[Result] = []
    async with Simulator() as sim:
        plan = [
            bare_httpx(sim, count=n(3000), concurrency=32),
            closed_loop(sim, "client, limits off", count=n(3000), concurrency=32, latency_ms=0, limits=None),
            closed_loop(sim, "client, limits off", count=n(2000), concurrency=100, latency_ms=100, limits=None),
            closed_loop(sim, "client, limits on", count=n(1400), concurrency=32, latency_ms=0, limits=REAL),
            closed_loop(sim, "client, limits on", count=n(1400), concurrency=100, latency_ms=100, limits=REAL),
            *(open_loop(sim, f"3x the limit, burst binds, run {run}", count=n(3000), offered_rps=3 * REAL.burst,
                        limits=REAL) for run in (1, 2, 3)),
            open_loop(sim, "3x the limit, steady binds", count=n(600), offered_rps=3 * SCALED.burst, limits=SCALED),
        ]
        for step in plan:
            result = await step
            results.append(result)
            print(f"{result.scenario:<32} {result.latency_ms:>5g} ms  {result.throughput_rps:>8} req/s  "
                  f"p50 {result.p50_ms} ms  p99 {result.p99_ms} ms  429s {result.throttled_429} "
                  f"({result.share_429_pct}%)", flush=True)
    document = {
        "benchmark": "klaviyo_client",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "quick": quick,
        "sniffio_installed": _installed("sniffio"),
        "results": [asdict(r) for r in results],
    }
    print()
    print(markdown(results))
    return document


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fifth of the requests (smoke run)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    arguments = parser.parse_args()
    results = asyncio.run(main(arguments.quick))
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {arguments.output}")
