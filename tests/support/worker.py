"""A consumer process for crash tests: prints "<partition> <offset>" for each handled record, exits 0 on SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from consumer.runtime import Handled, InboundMessage, StreamRuntime
from tests.support.kafka import kafka_settings, runtime_limits
from tests.support.recording import CollectingSink


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--delay", type=float, default=0.01)
    args = parser.parse_args(argv)

    async def record(message: InboundMessage) -> Handled:
        await asyncio.sleep(args.delay)
        sys.stdout.write(f"{message.partition} {message.offset}\n")
        sys.stdout.flush()
        return Handled(flow="worker")

    runtime = StreamRuntime(
        kafka=kafka_settings(args.bootstrap), limits=runtime_limits(max_in_flight=16), topics=[args.topic],
        processor=record, failure_sink=CollectingSink(), group_id=args.group,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.stop)
    await runtime.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(sys.argv[1:])))
