"""Sample traffic for the compose stack's ``demo`` profile, so the dashboards show data.

    python -m simulators.traffic [--interval 5] [--rounds N] [--ipaas-simulator URL]

Every ``interval`` seconds, one round of the demo's sample changes (``simulators.demo.sample_changes``: customers
and a transaction in Debezium, CloudEvents and plain JSON, plus two bad records) under identities of its own
(``c-r7-1001``, ``ada+r7@example.com``...), so each round creates new profiles and orders. With
``--ipaas-simulator``, the round's platform Customers (``simulators.demo.platform_customers``) are seeded there
first (its ``/__admin/customers``), as the demo seeds them: the orders' customers are read from it. Reads the service's
settings (``IPAAS_KLAVIYO_*``: the broker, the topic prefix) and serves ``/healthz`` on ``http.host:http.port``
for the container's healthcheck (unhealthy once no round went out for a while). Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import sys
import time
from collections.abc import Sequence

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from consumer.kafka import connection_options
from consumer.observability import logs
from consumer.observability.http import OpsServer
from consumer.settings import InvalidSettings, Settings, load_settings
from consumer.topics import TopicCatalog
from simulators.demo import platform_customers, sample_changes

log = logging.getLogger("simulators.traffic")
Change = tuple[str, bytes, bytes, list[tuple[str, bytes]]]

_IDS = re.compile(rb"\b(c|t|evt)-(\d+)")
_EMAILS = re.compile(rb"([a-z]+)@example\.com")


def _retag(data: bytes, tag: bytes) -> bytes:
    data = _IDS.sub(lambda m: m.group(1) + b"-" + tag + b"-" + m.group(2), data)
    return _EMAILS.sub(lambda m: m.group(1) + b"+" + tag + b"@example.com", data)


def round_of_platform_customers(number: int) -> list[dict[str, str]]:
    """The demo's platform Customers as round ``number`` (the ids and emails its changes name)."""
    tag = f"r{number}".encode()
    return [orjson.loads(_retag(orjson.dumps(customer), tag)) for customer in platform_customers()]


async def _seed_platform(ipaas_simulator: str, number: int) -> None:
    async with httpx.AsyncClient(base_url=ipaas_simulator.rstrip("/"), timeout=5.0) as client:
        for customer in round_of_platform_customers(number):
            (await client.post("/__admin/customers", json=customer)).raise_for_status()


def round_of_changes(number: int) -> list[Change]:
    """The demo's sample changes as round ``number``: ids and emails of their own, the same shapes."""
    tag = f"r{number}".encode()
    return [(logical, _retag(key, tag), _retag(value, tag), [(name, _retag(raw, tag)) for name, raw in headers])
            for logical, key, value, headers in sample_changes()]


async def run_traffic(settings: Settings, *, interval_s: float = 5.0, rounds: int | None = None,
                      stop: asyncio.Event | None = None, ipaas_simulator: str | None = None) -> int:
    """Send rounds until ``stop`` is set (or ``rounds`` went out); returns how many records were sent. With
    ``ipaas_simulator`` (its base URL), each round's platform Customers are seeded there first."""
    stop = stop or asyncio.Event()
    catalog = TopicCatalog.load(settings.topics_file, settings.topic_prefix)
    last_sent = time.monotonic()
    stale_after_s = max(60.0, 10 * interval_s)
    ops = OpsServer(settings.http.host, settings.http.port,
                    live=lambda: (time.monotonic() - last_sent < stale_after_s, {}),
                    ready=lambda: (True, {})).start()
    producer = AIOKafkaProducer(**connection_options(settings.kafka), acks="all")
    sent = number = 0
    try:
        await producer.start()
        while not stop.is_set() and (rounds is None or number < rounds):
            number += 1
            try:
                if ipaas_simulator:
                    await _seed_platform(ipaas_simulator, number)
                for logical, key, value, headers in round_of_changes(number):
                    await producer.send_and_wait(catalog.name(logical), value=value, key=key, headers=headers)
                    sent += 1
                last_sent = time.monotonic()
                log.info("sample round sent", extra={"round": number, "records": sent})
            except (KafkaError, httpx.HTTPError) as exc:
                log.warning("sample round failed; next round in a moment", extra={"error": str(exc)})
            if rounds is None or number < rounds:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)
    finally:
        await producer.stop()
        ops.close()
    return sent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.traffic", description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between rounds")
    parser.add_argument("--rounds", type=int, default=None, help="stop after this many rounds (default: never)")
    parser.add_argument("--ipaas-simulator", default=None,
                        help="the iPaaS.com simulator's base URL: seed each round's platform Customers there")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except InvalidSettings as exc:
        for problem in exc.problems:
            print(f"simulators.traffic: {problem}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_traffic(settings, interval_s=args.interval, rounds=args.rounds, stop=stop,
                          ipaas_simulator=args.ipaas_simulator)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
