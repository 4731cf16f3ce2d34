"""Backpressure benchmark: bytes received from the broker per byte handled, and peak RSS, while a slow
destination (a quota) binds and the runtime's buffer stays full.

A topic is filled with a backlog; the runtime then consumes it with a handler admitted by a quota of ``--rate``
records/s (the destination binds, the buffer fills). After ``--warmup`` seconds (the buffer and aiokafka's
prefetch fill once), it measures for ``--seconds``. Bytes received are what the process read
from its broker connections (counted at ``asyncio.StreamReader.readexactly``, which aiokafka reads every response
with: other processes on the machine don't count); bytes handled are the keys and values of the records the
handler finished. The run is a process of its own, so peak RSS is the run's. ``--label`` names the run in the
result file (run the script from another checkout, e.g. an earlier commit, to compare).

Writes bench/results/backpressure.json. Broker: KAFKA_BOOTSTRAP_SERVERS, else a local KRaft broker.
Usage: ``python bench/backpressure.py [--records 400000] [--seconds 40] [--rate 2000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumer.http.ratelimit import SlidingWindowLimiter, Window
from consumer.runtime import Handled, InboundMessage, StreamRuntime
from consumer.settings import KafkaSettings, RuntimeSettings

RESULTS = Path(__file__).resolve().parent / "results" / "backpressure.json"
PARTITIONS = 8
VALUE = b'{"id": "c-1", "first_name": "Ada", "last_name": "Lovelace", "email_address": "ada@example.com"}' * 3


_received = 0


def count_received_bytes() -> None:
    """Count every byte this process reads from its broker connections."""
    original = asyncio.StreamReader.readexactly

    async def readexactly(self: asyncio.StreamReader, n: int) -> bytes:
        global _received
        data = await original(self, n)
        _received += len(data)
        return data

    asyncio.StreamReader.readexactly = readexactly  # type: ignore[method-assign]


def received_bytes() -> int:
    return _received


async def fill(bootstrap: str, topic: str, count: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    for i in range(count):
        await producer.send(topic, value=VALUE, key=f"key-{i % 5000}".encode())
    await producer.flush()
    await producer.stop()


async def consume(bootstrap: str, topic: str, seconds: float, warmup: float, rate: int) -> dict[str, float]:
    count_received_bytes()
    quota = SlidingWindowLimiter([Window(max(1, rate // 10), 0.1)])
    handled_bytes = 0
    handled = 0

    async def handler(message: InboundMessage) -> Handled:
        nonlocal handled_bytes, handled
        await quota.acquire()
        handled += 1
        handled_bytes += len(message.value or b"") + len(message.key or b"")
        return Handled(flow="bench")

    runtime = StreamRuntime(
        kafka=KafkaSettings(bootstrap_servers=bootstrap), limits=RuntimeSettings(max_in_flight=256),
        topics=[topic], processor=handler, failure_sink=_never, group_id=f"bp-{uuid.uuid4().hex[:6]}")
    task = asyncio.create_task(runtime.run())
    await runtime.assigned.wait()
    await asyncio.sleep(warmup)
    rx_before, cpu_before, started = received_bytes(), time.process_time(), time.perf_counter()
    handled_before, bytes_before = handled, handled_bytes
    await asyncio.sleep(seconds)
    rx = received_bytes() - rx_before
    elapsed = time.perf_counter() - started
    result = {
        "seconds": round(elapsed, 1),
        "records_handled": handled - handled_before,
        "bytes_handled": handled_bytes - bytes_before,
        "bytes_received": rx,
        "received_per_handled": round(rx / max(1, handled_bytes - bytes_before), 2),
        "cpu_s": round(time.process_time() - cpu_before, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    runtime.stop()
    await task
    return result


async def _never(message: InboundMessage, failure: object) -> None:
    raise AssertionError("the bench handler never fails")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--label", default="shipped")
    parser.add_argument("--run", action="store_true", help="consume --topic in this process and print JSON")
    parser.add_argument("--topic")
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None
    if bootstrap is None:
        from simulators import localkafka

        broker = localkafka.start()
        bootstrap = broker.bootstrap_servers
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    try:
        if args.run:
            result = asyncio.run(consume(bootstrap, args.topic, args.seconds, args.warmup, args.rate))
            print(json.dumps(result))
            return
        topic = f"bench-bp-{uuid.uuid4().hex[:8]}"
        asyncio.run(fill(bootstrap, topic, args.records))
        out = subprocess.run(
            [sys.executable, __file__, "--run", "--topic", topic, "--seconds", str(args.seconds),
             "--warmup", str(args.warmup), "--rate", str(args.rate)], check=True, capture_output=True, text=True,
        ).stdout
        run = {"label": args.label, **json.loads(out.strip().splitlines()[-1])}
        print(run)
        previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        runs = [r for r in previous.get("runs", []) if r.get("label") != args.label] + [run]
        summary = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_before": os.getloadavg()},
            "records_in_backlog": args.records, "value_bytes": len(VALUE), "rate_limit_per_s": args.rate,
            "runs": runs,
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary, indent=2))
    finally:
        if broker is not None:
            from simulators import localkafka

            localkafka.stop(broker)


if __name__ == "__main__":
    main()
