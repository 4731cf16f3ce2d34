"""The ``ipaas-klaviyo`` command.

The development commands (``simulate``, ``kafka``, ``demo``) come from the ``simulators`` package (the
development tooling), imported only inside those commands: the service's own commands never import it.
An error ends a command with one clear line on stderr and an exit code of ``consumer.exitcodes`` (a traceback
only with ``--debug``); the commands that read or write Kafka check first that the broker answers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, suppress
from typing import TYPE_CHECKING, Any

from consumer.settings import Settings, load_settings

if TYPE_CHECKING:
    from consumer.failures.replay import Dispatch
    from consumer.klaviyo import Auth
    from consumer.routing import Source
    from consumer.topics import TopicCatalog

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]

DEV_TOOLING = "simulators"


class DevToolingMissing(Exception):
    """A development command was run where the development tooling (the ``simulators`` package) is absent."""

    def __init__(self, command: str) -> None:
        super().__init__(f"`ipaas-klaviyo {command}` is a development command and needs the development tooling "
                         f"(the `{DEV_TOOLING}` package), which is not installed here")


@contextmanager
def _dev_tooling(command: str) -> Iterator[None]:
    """Imports inside this block come from the development tooling: its absence becomes ``DevToolingMissing``."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if exc.name == DEV_TOOLING or (exc.name or "").startswith(DEV_TOOLING + "."):
            raise DevToolingMissing(command) from None
        raise


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    import logging

    from consumer import preflight
    from consumer.app import Service

    checks = await preflight.run_checks(settings, for_run=True)
    for check in checks:
        if check.status == "warn":
            logging.getLogger("consumer.preflight").warning(check.text, extra={"check": check.name})
        elif check.status == "fail":
            print(f"ipaas-klaviyo: {check.text}", file=sys.stderr)
    await _report_start_errors(settings, checks)
    if preflight.exit_code(checks):
        return preflight.exit_code(checks)
    await Service(settings).run(install_signal_handlers=True)
    return 0


async def _report_start_errors(settings: Settings, checks: Sequence[Any]) -> None:
    """The catalog errors that stop ``run`` (Client ID / Client Secret Not Configured) go to the error log too,
    when the broker and the topics are there to take them."""
    import logging

    from consumer import preflight
    from consumer.app import report_at_start

    errors = [check.error for check in checks if check.status == "fail" and check.error is not None]
    if not errors:
        return
    log = logging.getLogger("consumer.preflight")
    if not preflight.error_log_ready(checks):
        log.warning("the start-up error is not written to the error log: the broker or the topics are not there",
                    extra={"codes": [error.code for error in errors]})
        return
    from consumer.failures.errorlog import ErrorLog
    from consumer.kafka import reliable_producer
    from consumer.topics import TopicCatalog

    topic = TopicCatalog.load(settings.topics_file, settings.topic_prefix).name("error-log")
    producer = reliable_producer(settings.kafka)
    try:
        async with asyncio.timeout(preflight.KAFKA_TIMEOUT_S):
            await producer.start()
        for error in errors:
            await report_at_start(ErrorLog(producer, topic), error)
    except Exception as exc:
        log.warning("could not write the start-up error to the error log", extra={"reason": type(exc).__name__})
    finally:
        with suppress(Exception):
            await producer.stop()


async def _config(args: argparse.Namespace, settings: Settings) -> int:
    from consumer import preflight
    from consumer.settings import setting_sources

    if args.action == "show":
        rows = list(setting_sources(settings))
        width = max(len(name) for name, _, _ in rows)
        for name, value, source in rows:
            print(f"{name:<{width}}  {value}  ({source})")
        return 0
    checks = await preflight.run_checks(settings)
    print(preflight.format_report(checks))
    return preflight.exit_code(checks)


async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    with _dev_tooling("demo"):
        from simulators.demo import run_demo

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


@asynccontextmanager
async def replay_dispatch(
    settings: Settings,
    catalog: TopicCatalog,
    *,
    auth: Auth | None = None,
    routes: Sequence[Source] | None = None,
) -> AsyncIterator[Dispatch]:
    """What ``dlq replay --direct`` runs dead letters through: the service's dispatcher, failure path (error log,
    then dead letter) and retry policies, from the composition root (``consumer.app.build_dispatcher``).

    ``routes`` and ``auth`` replace the default routes and the Klaviyo credential (as ``Service`` takes them).
    The API clients and the producer of the failure path are closed on exit.
    """
    from aiokafka import AIOKafkaProducer

    from consumer.app import build_dispatcher
    from consumer.failures.replay import Dispatch
    from consumer.kafka import connection_options
    from consumer.runtime import RetryPolicy

    async with AsyncExitStack() as stack:
        producer = AIOKafkaProducer(**connection_options(settings.kafka), enable_idempotence=True, acks="all")
        await producer.start()
        stack.push_async_callback(producer.stop)
        wiring = await build_dispatcher(settings, stack, producer, catalog, auth=auth, routes=routes)
        default, table = RetryPolicy.from_settings(settings.runtime), wiring.table
        yield Dispatch(processor=wiring.dispatcher, failure_sink=wiring.failed_for_good,
                       policy_for=lambda topic: table.policy_for(topic, default), topics=frozenset(table.topics))


async def _dlq(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.failures import output
    from consumer.failures.deadletters import fetch_dead_letters, read_dead_letters
    from consumer.failures.filters import LetterFilter, dead_letter_topics, parse_ref
    from consumer.failures.replay import Mode, default_run_id, replay, superseded_spec
    from consumer.topics import TopicCatalog

    catalog = TopicCatalog.load(settings.topics_file, settings.topic_prefix)
    names = dead_letter_topics(catalog, args.topic)
    selection = LetterFilter.build(flows=args.flow, codes=args.code, keys=args.key, since=args.since,
                                   until=args.until)
    if args.action == "list":
        letters = await read_dead_letters(settings.kafka, names, selection, limit=args.limit)
        if args.json:
            for letter in letters:
                print(output.to_json_line(letter.to_dict()))
        else:
            print(output.format_table(letters))
            print(f"{len(letters)} dead letters in {', '.join(names)}", file=sys.stderr)
        return 0
    if args.action == "show":
        if args.refs:
            refs = [ref for text in args.refs for ref in parse_ref(text, names)]
            fetched = await fetch_dead_letters(settings.kafka, refs)
            letters = [letter for letter in fetched if selection.matches(letter)]
            there = {(letter.topic, letter.partition, letter.offset) for letter in fetched}
            absent = [text for text in args.refs
                      if not any((tp.topic, tp.partition, offset) in there for tp, offset in parse_ref(text, names))]
            for text in absent:
                where = "" if text.count(":") == 2 else f" in {', '.join(names)}"
                print(f"ipaas-klaviyo: no dead letter at {text}{where} (`ipaas-klaviyo dlq list` shows the "
                      "references)", file=sys.stderr)
        else:
            letters = await read_dead_letters(settings.kafka, names, selection, limit=args.limit)
        if args.json:
            for letter in letters:
                print(output.to_json_line(letter.to_dict(full=True)))
        else:
            print("\n\n".join(output.format_letter(letter) for letter in letters))
        if not letters and not args.refs:
            print("no dead letter found", file=sys.stderr)
        return 0 if letters else 1
    mode: Mode = "direct" if args.direct else "republish"
    # the default run id comes from the command line as typed (a relative --since stays the same run)
    run_id = args.run_id or default_run_id(mode, names, {**selection.spec(), "since": args.since,
                                                        "until": args.until, **superseded_spec(args.skip_superseded)})
    progress = output.TextProgress()
    try:
        async with AsyncExitStack() as stack:
            dispatch = None
            if mode == "direct" and not args.dry_run:
                dispatch = await stack.enter_async_context(replay_dispatch(settings, catalog))
            result = await replay(
                settings, catalog=catalog, topics=names, selection=selection, mode=mode, dry_run=args.dry_run,
                rate=args.rate, run_id=run_id, batch_size=args.batch_size, on_progress=progress, dispatch=dispatch,
                skip_superseded=args.skip_superseded,
            )
    finally:
        progress.close()
    if args.json:
        print(output.to_json_line(result.to_dict()))
    elif result.dry_run:
        print(output.format_table(result.letters))
        superseded = f", {result.superseded} superseded by a newer change" if args.skip_superseded else ""
        print(f"dry run of {result.run_id}: would replay {result.replayed} dead letters ({mode}), "
              f"{result.skipped} without an original topic{superseded}; nothing was written")
    else:
        superseded = f", superseded {result.superseded}" if args.skip_superseded else ""
        print(f"{result.run_id} ({mode}{', resumed' if result.resumed else ''}): replayed {result.replayed}, "
              f"failed again {result.failed}, skipped {result.skipped}{superseded}; "
              f"{result.total_replayed} over the whole run")
    return 1 if result.failed else 0


async def _errors(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.failures import output
    from consumer.failures.errorlog import read_error_log
    from consumer.failures.filters import ErrorLogFilter
    from consumer.topics import TopicCatalog

    catalog = TopicCatalog.load(settings.topics_file, settings.topic_prefix)
    selection = ErrorLogFilter.build(flows=args.flow, codes=args.code, severities=args.severity,
                                     records=args.record, since=args.since, until=args.until)
    entries = await read_error_log(settings.kafka, catalog.name("error-log"), selection, limit=args.limit)
    if args.json:
        for entry in entries:
            print(output.to_json_line(entry.to_dict()))
    elif args.full:
        print("\n\n".join(output.format_error(entry) for entry in entries))
    else:
        print(output.format_error_table(entries))
    return 0


async def _poll_profiles(args: argparse.Namespace, settings: Settings) -> int:
    import signal

    from consumer.app import klaviyo_auth
    from consumer.klaviyo import KlaviyoClient
    from consumer.observability import metrics
    from consumer.observability.http import OpsServer
    from consumer.poller import open_poller
    from consumer.timefmt import parse_time

    options = settings.poller
    async with KlaviyoClient(settings.klaviyo, klaviyo_auth(settings)) as klaviyo, open_poller(
        settings, klaviyo=klaviyo, name=options.name, interval_s=options.interval_s, page_size=options.page_size,
    ) as poller:
        if args.profile:
            from consumer.catalog import CatalogError

            missing = []
            for profile_id in args.profile:
                try:
                    profile = await poller.sync_profile(profile_id)
                except CatalogError as error:
                    if error.http_status != 404:
                        raise
                    missing.append(profile_id)
                    continue
                print(f"published profile {profile.id}")
            if missing:
                print(f"ipaas-klaviyo: Klaviyo has no profile {', '.join(map(repr, missing))} (404); nothing "
                      f"published for {'it' if len(missing) == 1 else 'them'}", file=sys.stderr)
            return 1 if missing else 0
        if args.since or args.once:
            result = await (poller.backfill(parse_time(args.since)) if args.since else poller.run_once())
            print(f"published {result.published} changed profiles ({result.skipped} unchanged, {result.pages} pages)")
            return 0
        metrics.initialize()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        ops = OpsServer(settings.http.host, settings.http.port, live=lambda: (True, {}),
                        ready=lambda: (True, {})).start()
        try:
            await poller.run(stop)
        finally:
            ops.close()
    return 0


async def _kafka(args: argparse.Namespace, settings: Settings) -> int:
    with _dev_tooling("kafka"):
        from simulators import localkafka

    if args.action == "start":
        running = localkafka.recorded()
        if running is not None:
            print(f"a local broker already runs (pid {running.pid}); `ipaas-klaviyo kafka stop` stops it",
                  file=sys.stderr)
            print(running.bootstrap_servers)
            return 0
        try:
            broker = localkafka.start(port=args.port)
        except localkafka.BrokerError as exc:
            print(f"ipaas-klaviyo: {exc}", file=sys.stderr)
            return 1
        print(broker.bootstrap_servers)
    elif args.action == "stop":
        print("stopped" if localkafka.stop() else "no local broker running")
    else:
        running = localkafka.recorded()
        print(running.bootstrap_servers if running else "no local broker running")
        return 0 if running else 1
    return 0


async def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    with _dev_tooling("simulate"):
        from simulators import ipaas as ipaas_simulator
        from simulators import klaviyo as klaviyo_simulator

    print(f"{args.system} simulator on http://{args.host}:{args.port}", flush=True)
    if args.system == "klaviyo":
        config = klaviyo_simulator.SimulatorConfig()
        for key in args.api_key:
            config.api_keys[key] = klaviyo_simulator.ApiKeyGrant()
        await klaviyo_simulator.serve_forever(args.host, args.port, config)
    else:
        await ipaas_simulator.serve_forever(args.host, args.port, ipaas_simulator.SimulatorConfig(
            tokens={ipaas_simulator.DEFAULT_TOKEN, *args.token}))
    return 0


async def _authorize(args: argparse.Namespace, settings: Settings) -> int:
    from consumer import exitcodes, oauth
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
        lines, code = exitcodes.explain(error)
        _error_lines(lines)
        return code
    print(f"Authorized with Klaviyo (scopes: {' '.join(tokens.scope) or 'as granted'}); "
          f"tokens stored in {settings.oauth.token_file}")
    return 0


async def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    from consumer import exitcodes, oauth
    from consumer.catalog import CatalogError

    try:
        result = await oauth.revoke(settings, force=args.force)
    except CatalogError as error:
        lines, code = exitcodes.explain(error)
        _error_lines(lines)
        return code
    if result.revoked:
        print(f"Klaviyo tokens revoked; {settings.oauth.token_file} deleted")
        return 0
    if result.deleted:
        print(f"ipaas-klaviyo: {result.problem}; {settings.oauth.token_file} deleted anyway (--force)", file=sys.stderr)
        return 1
    hint = "" if result.problem and result.problem.startswith("no token file") else " (retry, or --force to delete)"
    print(f"ipaas-klaviyo: {result.problem}; nothing deleted{hint}", file=sys.stderr)
    return 1


async def _status(args: argparse.Namespace, settings: Settings) -> int:
    from aiokafka.errors import KafkaError

    from consumer import status
    from consumer.topics import TopicCatalog

    catalog = TopicCatalog.load(settings.topics_file, settings.topic_prefix)
    try:
        document, where = await status.read_status(settings, catalog, url=args.url, kafka_only=args.kafka)
    except (KafkaError, OSError, TimeoutError) as exc:
        print(f"ipaas-klaviyo: no service answered and Kafka could not be read ({exc or type(exc).__name__}); "
              f"check kafka.bootstrap_servers ({settings.kafka.bootstrap_servers})", file=sys.stderr)
        return 1
    if args.json:
        import orjson

        print(orjson.dumps(document).decode())
    else:
        print(status.format_status(document, where=where))
    return 0


async def _exporter(args: argparse.Namespace, settings: Settings) -> int:
    import signal

    from consumer import status
    from consumer.kafka_view import KafkaView
    from consumer.observability import metrics
    from consumer.observability.http import OpsServer
    from consumer.topics import TopicCatalog

    if args.interval <= 0:
        raise ValueError("--interval must be > 0 seconds")
    catalog = TopicCatalog.load(settings.topics_file, settings.topic_prefix)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics.initialize()
    async with KafkaView.for_settings(settings, catalog, interval_s=args.interval).running() as view:
        ops = OpsServer(settings.http.host, settings.http.port, live=lambda: (True, {}),
                        ready=lambda: (view.snapshot.lag_at is not None, {"errors": dict(view.snapshot.errors)}),
                        status=lambda: status.build_status(view.snapshot, catalog, source="exporter")).start()
        print(f"exporting the lag of group {settings.kafka.group_id} and the dead-letter backlog on "
              f"http://{settings.http.host}:{ops.port}/metrics", flush=True)
        try:
            await stop.wait()
        finally:
            ops.close()
    return 0


def _ops_commands(commands: Any) -> None:
    """``status`` and ``exporter``: what operators read about a running (or stopped) integration."""
    status = commands.add_parser(
        "status", help="lag, pauses, authorization, dead letters and poller watermark on one screen")
    status.add_argument("--url", default=None, help="the service's (or exporter's) address "
                        "(default: http://<http.host>:<http.port>); when nothing answers, from Kafka alone")
    status.add_argument("--kafka", action="store_true", help="read Kafka alone, not the service")
    status.add_argument("--json", action="store_true", help="machine output (one JSON document)")
    status.set_defaults(handler=_status)

    exporter = commands.add_parser(
        "exporter", help="serve the lag and the dead-letter backlog from Kafka alone (/metrics, /status)")
    exporter.add_argument("--interval", type=float, default=5.0, help="seconds between readings of Kafka")
    exporter.set_defaults(handler=_exporter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipaas-klaviyo", description=__doc__,
                                     epilog="exit codes: 0 done, 1 failed, 2 usage or configuration, 130 interrupted")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("run", help="check the configuration, the broker and the topics, then run the service"
                        ).set_defaults(handler=_run)

    config = commands.add_parser("config", help="check the configuration (settings, broker, topics) or show it")
    config.add_argument("action", choices=["check", "show"])
    config.set_defaults(handler=_config)

    demo = commands.add_parser("demo", help="local broker, simulators and sample events: see it work (development)")
    demo.add_argument("--keep-running", action="store_true", help="keep the service running after the demo")
    demo.set_defaults(handler=_demo)

    topics = commands.add_parser("topics", help="create/update the catalog's topics, or report drift")
    topics.add_argument("action", choices=["apply", "check"])
    topics.set_defaults(handler=_topics, uses_kafka=True)

    letters = argparse.ArgumentParser(add_help=False)
    letters.add_argument("--topic", action="append", default=[], help="a dead-letter topic or its source topic "
                         "(logical id or Kafka name); repeatable; default: every dead-letter topic")
    letters.add_argument("--flow", action="append", default=[], help="flow (slug or catalog name); repeatable")
    letters.add_argument("--code", action="append", default=[], help="error code; repeatable")
    letters.add_argument("--key", action="append", default=[], help="record key; repeatable")
    letters.add_argument("--since", help="last failure at or after: ISO time, or relative (30m, 2h, 7d)")
    letters.add_argument("--until", help="last failure at or before: ISO time, or relative")
    letters.add_argument("--json", action="store_true", help="machine output (JSON)")
    dlq_parser = commands.add_parser("dlq", help="read dead-letter topics, and replay dead letters")
    dlq_actions = dlq_parser.add_subparsers(dest="action", required=True)
    dlq_list = dlq_actions.add_parser("list", parents=[letters], help="one line per dead letter")
    dlq_list.add_argument("--limit", type=int, default=None)
    dlq_show = dlq_actions.add_parser("show", parents=[letters], help="dead letters in full")
    dlq_show.add_argument("refs", nargs="*", metavar="REF", help="[topic:]partition:offset (default: the filter)")
    dlq_show.add_argument("--limit", type=int, default=None)
    dlq_replay = dlq_actions.add_parser(
        "replay", parents=[letters], help="re-publish dead letters to their original topic (resumable)")
    dlq_replay.add_argument("--direct", action="store_true", help="run them through the flow handlers instead")
    dlq_replay.add_argument("--dry-run", action="store_true", help="list what would be replayed; write nothing")
    dlq_replay.add_argument("--rate", type=float, default=None, help="at most this many records per second")
    dlq_replay.add_argument("--run-id", default=None, help="the run to resume (default: derived from the filter)")
    dlq_replay.add_argument("--batch-size", type=int, default=100, help="records per committed batch")
    dlq_replay.add_argument("--skip-superseded", action="store_true",
                            help="leave out dead letters whose key has a newer change the service finished without "
                                 "dead-lettering it (read from the source topic and the group's committed offset)")
    dlq_parser.set_defaults(handler=_dlq, uses_kafka=True)

    errors = commands.add_parser("errors", help="read the error log (the Error Logs of the affected transfers)")
    errors.add_argument("--flow", action="append", default=[], help="flow (slug or catalog name); repeatable")
    errors.add_argument("--code", action="append", default=[], help="error code; repeatable")
    errors.add_argument("--severity", action="append", default=[], choices=["error", "warning"])
    errors.add_argument("--record", action="append", default=[], help="the transfer: kind:id, or an id; repeatable")
    errors.add_argument("--since", help="logged at or after: ISO time, or relative (30m, 2h, 7d)")
    errors.add_argument("--until", help="logged at or before: ISO time, or relative")
    errors.add_argument("--limit", type=int, default=None)
    errors.add_argument("--full", action="store_true", help="every field, with what to do")
    errors.add_argument("--json", action="store_true", help="machine output (one JSON record per line)")
    errors.set_defaults(handler=_errors, uses_kafka=True)

    poll = commands.add_parser("poll-profiles", help="publish changed Klaviyo profiles (the TO-iPaaS.com source)")
    poll.add_argument("--once", action="store_true", help="one poll from the watermark, then exit")
    poll.add_argument("--profile", action="append", metavar="ID", help="publish this profile now (repeatable)")
    poll.add_argument("--since", metavar="TIME", help="backfill profiles updated since TIME (ISO, or 2h / 7d)")
    poll.set_defaults(handler=_poll_profiles, uses_kafka=True)

    kafka = commands.add_parser("kafka", help="a local single-node Kafka broker (no Docker) for development")
    kafka.add_argument("action", choices=["start", "stop", "status"])
    kafka.add_argument("--port", type=int, default=None)
    kafka.set_defaults(handler=_kafka)

    simulate = commands.add_parser("simulate", help="run the Klaviyo or iPaaS.com simulator (development)")
    simulate.add_argument("system", choices=["klaviyo", "ipaas"])
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8080)
    simulate.add_argument("--api-key", action="append", default=[], help="a Klaviyo private key to accept too")
    simulate.add_argument("--token", action="append", default=[], help="an iPaaS.com API token to accept too")
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
    _ops_commands(commands)
    return parser


def _error_lines(lines: Sequence[str]) -> None:
    for line in lines:
        print(line if line.startswith(" ") else f"ipaas-klaviyo: {line}", file=sys.stderr)


async def _command(args: argparse.Namespace, settings: Settings) -> int:
    if getattr(args, "uses_kafka", False):
        from consumer.preflight import require_kafka

        await require_kafka(settings)
    handler: Command = args.handler
    return await handler(args, settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (see ``consumer.exitcodes``)."""
    from consumer import exitcodes

    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        from consumer.observability import logs

        logs.configure(settings.log_level)
        return asyncio.run(_command(args, settings))
    except KeyboardInterrupt:
        return exitcodes.INTERRUPTED
    except DevToolingMissing as exc:
        print(f"ipaas-klaviyo: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    except (Exception, asyncio.CancelledError) as exc:  # one clear line for the operator; --debug: the traceback
        if args.debug:
            traceback.print_exc()
        lines, code = exitcodes.explain(exc)
        _error_lines(lines)
        return code


if __name__ == "__main__":
    raise SystemExit(main())
