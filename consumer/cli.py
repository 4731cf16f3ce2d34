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


async def _authorize(args: argparse.Namespace, settings: Settings) -> int:
    from consumer import oauth
    from consumer.catalog import CatalogError

    redirect = settings.oauth.redirect_url
    receiver: oauth.CallbackReceiver | None = None
    if redirect and (args.paste or not oauth.is_loopback(redirect)):
        prompt = "Paste the URL your browser was sent to after approving: "
        receiver = oauth.PastedCallback(redirect, lambda: asyncio.to_thread(input, prompt))

    async def show(url: str) -> None:
        print(f"Open this URL in a browser and approve access to Klaviyo:\n\n  {url}\n", flush=True)
        if not args.no_browser:
            import webbrowser

            await asyncio.to_thread(webbrowser.open, url)

    try:
        tokens = await oauth.authorize(
            settings, receiver=receiver, show_url=show, timeout_s=args.timeout,
            report=None if args.no_error_log else oauth.kafka_reporter(settings),
        )
    except CatalogError as error:
        print(f"ipaas-klaviyo: {error.entry.title}: {error.message}", file=sys.stderr)
        if error.detail:
            print(f"  detail: {error.detail}", file=sys.stderr)
        print(f"  what to do: {error.entry.action}", file=sys.stderr)
        return 1
    print(f"Authorized with Klaviyo (scopes: {' '.join(tokens.scope) or 'as granted'}); "
          f"tokens stored in {settings.oauth.token_file}")
    return 0


async def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    from consumer import oauth
    from consumer.catalog import CatalogError

    try:
        result = await oauth.revoke(settings, force=args.force)
    except CatalogError as error:
        print(f"ipaas-klaviyo: {error.entry.title}: {error.message}", file=sys.stderr)
        return 1
    if result.revoked:
        print(f"Klaviyo tokens revoked; {settings.oauth.token_file} deleted")
        return 0
    if result.deleted:
        print(f"ipaas-klaviyo: {result.problem}; {settings.oauth.token_file} deleted anyway (--force)", file=sys.stderr)
        return 1
    hint = "" if result.problem and result.problem.startswith("no token file") else " (retry, or --force to delete)"
    print(f"ipaas-klaviyo: {result.problem}; nothing deleted{hint}", file=sys.stderr)
    return 1


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

    authorize = commands.add_parser("authorize", help="connect to Klaviyo with OAuth and store the tokens")
    authorize.add_argument("--paste", action="store_true",
                           help="paste the redirect URL instead of serving it on the loopback address")
    authorize.add_argument("--no-browser", action="store_true", help="print the authorization URL only")
    authorize.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the redirect")
    authorize.add_argument("--no-error-log", action="store_true",
                           help="do not write authorization errors to the error-log topic")
    authorize.set_defaults(handler=_authorize)

    revoke = commands.add_parser("revoke", help="revoke the Klaviyo OAuth tokens and delete the token file")
    revoke.add_argument("--force", action="store_true", help="delete the token file even if Klaviyo cannot confirm")
    revoke.set_defaults(handler=_revoke)
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
