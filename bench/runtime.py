"""Runtime benchmark against a real broker: raw aiokafka vs our runtime vs a naive one-at-a-time loop.

Prints the numbers and writes them to bench/results/runtime.json. Broker: KAFKA_BOOTSTRAP_SERVERS, else a local
KRaft broker started for the run. Usage: ``python bench/runtime.py [--messages 500000] [--slow-messages 4000]``.

(a) raw aiokafka ``getmany`` consumption, no handling; (b) our runtime with a no-op handler; (c) a naive loop
that handles one record at a time and commits after each batch; then (b) and (c) with a handler that sleeps
50 ms (1,000 keys, in-flight 256); peak RSS of the process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sys
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumer.runtime import Handled, InboundMessage, StreamRuntime
from consumer.settings import KafkaSettings, RuntimeSettings
from simulators import localkafka

RESULTS = Path(__file__).resolve().parent / "results" / "runtime.json"
PARTITIONS = 8


async def fill_topic(bootstrap: str, topic: str, count: int, keys: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    value = b'{"id": "c-1", "first_name": "Ada", "last_name": "Lovelace", "email_address": "ada@example.com"}'
    for i in range(count):
        await producer.send(topic, value=value, key=f"key-{i % keys}".encode())
    await producer.flush()
    await producer.stop()


async def raw_aiokafka(bootstrap: str, topic: str, count: int) -> float:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"raw-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    seen = 0
    started = time.perf_counter()
    while seen < count:
        batch = await consumer.getmany(timeout_ms=500, max_records=500)
        seen += sum(len(records) for records in batch.values())
    elapsed = time.perf_counter() - started
    await consumer.commit()
    await consumer.stop()
    return count / elapsed


async def our_runtime(bootstrap: str, topic: str, count: int, delay_s: float, in_flight: int) -> float:
    done = 0
    finished = asyncio.Event()

    async def handler(message: InboundMessage) -> Handled:
        nonlocal done
        if delay_s:
            await asyncio.sleep(delay_s)
        done += 1
        if done >= count:
            finished.set()
        return Handled(flow="bench")

    async def sink(message: InboundMessage, failure: object) -> None:
        raise AssertionError("nothing fails in the benchmark")

    runtime = StreamRuntime(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        limits=RuntimeSettings(max_in_flight=in_flight),
        topics=[topic], processor=handler, failure_sink=sink, group_id=f"ours-{uuid.uuid4().hex[:6]}",
    )
    task = asyncio.create_task(runtime.run())
    await runtime.assigned.wait()
    started = time.perf_counter()
    await finished.wait()
    elapsed = time.perf_counter() - started
    runtime.stop()
    await task
    return count / elapsed


async def naive_loop(bootstrap: str, topic: str, count: int, delay_s: float) -> float:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"naive-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    seen = 0
    started = time.perf_counter()
    while seen < count:
        batch = await consumer.getmany(timeout_ms=500, max_records=500)
        for records in batch.values():
            for _record in records:
                if delay_s:
                    await asyncio.sleep(delay_s)
                seen += 1
                if seen >= count:
                    break
        await consumer.commit()
    elapsed = time.perf_counter() - started
    await consumer.stop()
    return seen / elapsed


async def main(args: argparse.Namespace) -> dict[str, object]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None
    if not bootstrap:
        broker = localkafka.start()
        bootstrap = broker.bootstrap_servers
    try:
        fast_topic, slow_topic = f"bench-fast-{uuid.uuid4().hex[:6]}", f"bench-slow-{uuid.uuid4().hex[:6]}"
        await fill_topic(bootstrap, fast_topic, args.messages, keys=1000)
        await fill_topic(bootstrap, slow_topic, args.slow_messages, keys=1000)
        # the broker shares the machine's cores, so single runs are noisy: interleave, keep each one's best
        raws, ours, naives = [], [], []
        for _ in range(args.repeat):
            raws.append(await raw_aiokafka(bootstrap, fast_topic, args.messages))
            ours.append(await our_runtime(bootstrap, fast_topic, args.messages, 0.0, args.in_flight))
            naives.append(await naive_loop(bootstrap, fast_topic, args.messages, 0.0))
        raw, ours_noop, naive_noop = max(raws), max(ours), max(naives)
        ours_slow = await our_runtime(bootstrap, slow_topic, args.slow_messages, 0.05, args.in_flight)
        naive_slow = await naive_loop(bootstrap, slow_topic, args.naive_slow_messages, 0.05)
    finally:
        if broker is not None:
            localkafka.stop(broker)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "command": " ".join(["python", "bench/runtime.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "messages": args.messages, "slow_messages": args.slow_messages, "in_flight": args.in_flight,
        "repeat": args.repeat, "noop_runs_msgs_per_s": {"a": [round(x) for x in raws], "b": [round(x) for x in ours]},
        "msgs_per_s": {
            "a_raw_aiokafka": round(raw), "b_runtime_noop": round(ours_noop), "c_naive_noop": round(naive_noop),
            "b_runtime_50ms": round(ours_slow, 1), "c_naive_50ms": round(naive_slow, 1),
        },
        "ratios": {
            "b_noop_over_a": round(ours_noop / raw, 3),
            "b_50ms_over_c_50ms": round(ours_slow / naive_slow, 1),
        },
        "targets": {"b_noop_over_a": ">= 0.35", "b_50ms_over_c_50ms": ">= 20"},
        "peak_rss_mb": round(peak_rss_mb, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=500_000)
    parser.add_argument("--slow-messages", type=int, default=4_000)
    parser.add_argument("--naive-slow-messages", type=int, default=100)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3, help="no-op runs of (a), (b), (c); the best of each counts")
    results = asyncio.run(main(parser.parse_args()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
