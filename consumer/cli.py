"""The ``ipaas-klaviyo`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from consumer.settings import Settings, load_settings

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.app import Service

    await Service(settings).run(install_signal_handlers=True)
    return 0


async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.demo import run_demo

    return await run_demo(settings, keep_running=args.keep_running)


async def _topics(args: argparse.Namespace, settings: Settings) -> int:
    from consumer import topics

    catalog = topics.TopicCatalog.load(settings.topics_file, settings.topic_prefix)
    if args.action == "apply":
        changes = await topics.apply(catalog, settings.kafka)
        for change in changes:
            print(change)
        print(f"{len(catalog.topics)} topics in the catalog; {len(changes)} changes applied")
        return 0
    drift = await topics.check(catalog, settings.kafka)
    for item in drift:
        print(f"{item.topic}: {item.problem}")
    print("no drift" if not drift else f"{len(drift)} differences from the catalog")
    return 1 if drift else 0


async def _kafka(args: argparse.Namespace, settings: Settings) -> int:
    from consumer import localkafka

    if args.action == "start":
        broker = localkafka.start(port=args.port)
        print(broker.bootstrap_servers)
    elif args.action == "stop":
        print("stopped" if localkafka.stop() else "no local broker running")
    else:
        running = localkafka.recorded()
        print(running.bootstrap_servers if running else "no local broker running")
        return 0 if running else 1
    return 0


async def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.ipaas import simulator as ipaas_simulator
    from consumer.klaviyo import simulator as klaviyo_simulator

    print(f"{args.system} simulator on http://{args.host}:{args.port}", flush=True)
    if args.system == "klaviyo":
        await klaviyo_simulator.serve_forever(args.host, args.port)
    else:
        await ipaas_simulator.serve_forever(args.host, args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipaas-klaviyo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("run", help="run the service").set_defaults(handler=_run)

    demo = commands.add_parser("demo", help="local broker, simulators and sample events: see it work")
    demo.add_argument("--keep-running", action="store_true", help="keep the service running after the demo")
    demo.set_defaults(handler=_demo)

    topics = commands.add_parser("topics", help="create/update the catalog's topics, or report drift")
    topics.add_argument("action", choices=["apply", "check"])
    topics.set_defaults(handler=_topics)

    kafka = commands.add_parser("kafka", help="a local single-node Kafka broker (no Docker) for development")
    kafka.add_argument("action", choices=["start", "stop", "status"])
    kafka.add_argument("--port", type=int, default=None)
    kafka.set_defaults(handler=_kafka)

    simulate = commands.add_parser("simulate", help="run the Klaviyo or iPaaS.com simulator")
    simulate.add_argument("system", choices=["klaviyo", "ipaas"])
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8080)
    simulate.set_defaults(handler=_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings()
    from consumer.observability import logs

    logs.configure(settings.log_level)
    handler: Command = args.handler
    try:
        return asyncio.run(handler(args, settings))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clear one-line error for the operator; details are in the JSON log
        from consumer.app import ConfigurationError

        if isinstance(exc, ConfigurationError | ValueError):
            print(f"ipaas-klaviyo: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    raise SystemExit(main())
