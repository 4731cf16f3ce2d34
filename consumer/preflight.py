"""Preflight: can the service start with these settings? What ``ipaas-klaviyo config check`` reports, and what
``ipaas-klaviyo run`` checks before it starts (and the other Kafka commands check of the broker).

Each check is one line: ok, a warning, or a failure with its exit code (2: the configuration is wrong, 1: the
environment is not there, e.g. the broker does not answer). The broker check is bounded (``KAFKA_TIMEOUT_S``) and
says what was tried, both when nothing listens and when something listens but never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from consumer.settings import Settings, env_name, settings_file

if TYPE_CHECKING:
    from consumer.catalog import CatalogError
    from consumer.settings import KafkaSettings
    from consumer.topics import TopicCatalog

KAFKA_TIMEOUT_S = 10.0
CONFIGURATION, UNAVAILABLE = 2, 1
Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One check's outcome; a failed check carries its exit code (``CONFIGURATION`` or ``UNAVAILABLE``), and the
    catalog error behind it when the catalog has one (``run`` writes it to the error log)."""

    name: str
    status: Status
    text: str
    exit_code: int = 0
    error: CatalogError | None = field(default=None, compare=False, repr=False)

    @classmethod
    def ok(cls, name: str, text: str) -> Check:
        return cls(name, "ok", text)

    @classmethod
    def warn(cls, name: str, text: str) -> Check:
        return cls(name, "warn", text)

    @classmethod
    def fail(cls, name: str, text: str, exit_code: int = CONFIGURATION, error: CatalogError | None = None) -> Check:
        return cls(name, "fail", text, exit_code, error)


class PreflightFailed(Exception):
    """A check a command needs failed; its text is the one line the operator sees."""

    def __init__(self, check: Check) -> None:
        self.check = check
        super().__init__(check.text)


def exit_code(checks: Sequence[Check]) -> int:
    """0 when nothing failed; else 2 when the configuration is wrong, 1 when only the environment is."""
    codes = {check.exit_code for check in checks if check.status == "fail"}
    return CONFIGURATION if CONFIGURATION in codes else max(codes, default=0)


async def run_checks(settings: Settings, *, for_run: bool = False) -> list[Check]:
    """Every check, in order: the configuration, then the broker, then the catalog's topics on it.

    ``for_run``: the checks of ``ipaas-klaviyo run`` (a metrics port in use fails instead of warning).
    """
    catalog, checks = _catalog(settings)
    checks += [_mappings(settings), _klaviyo(settings), _ipaas(settings), *_kafka_security(settings),
               _http_port(settings, for_run=for_run)]
    broker = await check_kafka(settings.kafka)
    checks.append(broker)
    if broker.status == "ok" and catalog is not None:
        retry_topics = len(settings.runtime.retry_topic_delays_s)
        checks.append(await check_topics(catalog, settings.kafka, retry_topics=retry_topics))
    return checks


async def require_kafka(settings: Settings) -> None:
    """Raise ``PreflightFailed`` unless the broker answers (within ``KAFKA_TIMEOUT_S``)."""
    for check in [*_kafka_security(settings), await check_kafka(settings.kafka)]:
        if check.status == "fail":
            raise PreflightFailed(check)


def error_log_ready(checks: Sequence[Check]) -> bool:
    """Whether the broker answered and the catalog's topics (the error log's among them) exist."""
    passed = {check.name for check in checks if check.status == "ok"}
    return {"kafka", "topics"} <= passed and not any(
        check.status == "fail" for check in checks if check.name in ("kafka", "topics"))


def format_report(checks: Sequence[Check]) -> str:
    """``config check``'s report: one line per check."""
    width = max(len(check.name) for check in checks)
    return "\n".join(f"{check.status.upper():<5} {check.name:<{width}}  {check.text}" for check in checks)


# --- the configuration ----------------------------------------------------------------------------------------------
def _catalog(settings: Settings) -> tuple[TopicCatalog | None, list[Check]]:
    from consumer.topics import TopicCatalog

    path = settings_file()
    source = f"file {path} and" if path is not None else "no settings file:"
    checks = [Check.ok("settings", f"{source} IPAAS_KLAVIYO_* variables over the defaults (`config show`)")]
    try:
        catalog = TopicCatalog.load(settings.topics_file, settings.topic_prefix)
    except ValueError as exc:
        checks.append(Check.fail("topic catalog", f"{exc} (topics_file, {env_name('topics_file')})"))
        return None, checks
    where = settings.topics_file or "shipped topics/topics.yaml"
    prefix = f"prefix {settings.topic_prefix!r}" if settings.topic_prefix else "no topic prefix"
    checks.append(Check.ok("topic catalog", f"{len(catalog.topics)} topics from {where}, {prefix}"))
    return catalog, checks


def _mappings(settings: Settings) -> Check:
    from consumer.mapping import MappingError, load_collections

    try:
        collections = load_collections(settings.mapping_dir)
    except MappingError as exc:
        return Check.fail("mappings", f"{exc} (mapping_dir, {env_name('mapping_dir')})")
    where = f"from {settings.mapping_dir}" if settings.mapping_dir else "the shipped defaults"
    return Check.ok("mappings", f"{len(collections)} flows, {where}")


def _klaviyo(settings: Settings) -> Check:
    from consumer.app import ConfigurationError, klaviyo_auth
    from consumer.oauth import TokenStore

    try:
        klaviyo_auth(settings)
        if settings.klaviyo.api_key is None:  # the tokens must also be readable with oauth.token_key
            TokenStore(settings.oauth.token_file, settings.oauth.token_key).load()
    except ConfigurationError as exc:
        return Check.fail("klaviyo", str(exc), error=exc.error)
    except ValueError as exc:
        return Check.fail("klaviyo", str(exc))
    kind = "private API key" if settings.klaviyo.api_key is not None else f"OAuth tokens in {settings.oauth.token_file}"
    return Check.ok("klaviyo", f"{settings.klaviyo.base_url} with a {kind}")


def _ipaas(settings: Settings) -> Check:
    if settings.ipaas.api_token is None:
        return Check.warn("ipaas", f"no API token: the TO-iPaaS.com flows and hook notifications will fail, and an "
                                   f"order's new customer is made from the transaction alone; set ipaas.api_token "
                                   f"({env_name('ipaas.api_token')})")
    return Check.ok("ipaas", f"{settings.ipaas.base_url} with an API token")


def _kafka_security(settings: Settings) -> Iterator[Check]:
    kafka = settings.kafka
    if kafka.security_protocol.startswith("SASL") and (kafka.sasl_username is None or kafka.sasl_password is None):
        yield Check.fail("kafka", f"security protocol {kafka.security_protocol} needs kafka.sasl_username and "
                                  f"kafka.sasl_password ({env_name('kafka.sasl_username')}, "
                                  f"{env_name('kafka.sasl_password')})")
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        for setting in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(kafka, setting)
            if path is not None and not path.is_file():
                yield Check.fail("kafka", f"kafka.{setting} {path} does not exist ({env_name('kafka.' + setting)})")


def _http_port(settings: Settings, *, for_run: bool) -> Check:
    host, port = settings.http.host, settings.http.port
    if port == 0:
        return Check.ok("http", f"/metrics, /healthz, /readyz on {host}, any free port")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        text = (f"cannot serve /metrics on {host}:{port} ({exc.strerror or exc}); set http.port "
                f"({env_name('http.port')}) or http.host ({env_name('http.host')})")
        return Check.fail("http", text) if for_run else Check.warn("http", text + " (or the service is running)")
    return Check.ok("http", f"/metrics, /healthz, /readyz on {host}:{port}")


# --- the broker -------------------------------------------------------------------------------------------------
def _servers(bootstrap: str) -> list[tuple[str, int]]:
    servers = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        servers.append((host.strip("[]") or server.strip(), int(port) if port.isdigit() else 9092))
    return servers


async def _tcp(host: str, port: int, timeout_s: float) -> str | None:
    """None when ``host:port`` accepts a TCP connection, else why not."""
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return f"{host}:{port} did not accept a connection within {timeout_s:.0f}s"
    except socket.gaierror:
        return f"{host} is not a known host name"
    except ConnectionRefusedError:
        return f"{host}:{port} refused the connection (nothing listens there)"
    except OSError as exc:
        return f"{host}:{port}: {(os.strerror(exc.errno) if exc.errno else str(exc)).lower()}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


@contextlib.contextmanager
def _quiet_kafka_client() -> Iterator[None]:
    """aiokafka logs each failed connection as an error; the check reports the outcome itself."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def check_kafka(kafka: KafkaSettings, timeout_s: float = KAFKA_TIMEOUT_S) -> Check:
    """Does the broker answer a metadata request within ``timeout_s``? The failure says what was tried and why."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    from consumer.kafka import connection_options

    tried = f"tried {kafka.bootstrap_servers} (security protocol {kafka.security_protocol})"
    fix = (f"check kafka.bootstrap_servers ({env_name('kafka.bootstrap_servers')}) and kafka.security_protocol "
           f"({env_name('kafka.security_protocol')}), and that the broker runs")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    servers = _servers(kafka.bootstrap_servers)
    reasons = await asyncio.gather(*(_tcp(host, port, min(5.0, timeout_s)) for host, port in servers))
    if all(reasons):
        return Check.fail("kafka", f"Kafka is not reachable: {tried}: {'; '.join(r for r in reasons if r)}; {fix}",
                          UNAVAILABLE)
    remaining = max(deadline - loop.time(), 1.0)
    try:
        options = connection_options(kafka)
    except OSError as exc:  # the SSL context: a CA or key file that cannot be read
        return Check.fail("kafka", f"Kafka TLS settings cannot be used: {exc}")
    with _quiet_kafka_client():
        admin = AIOKafkaAdminClient(**options, request_timeout_ms=int(remaining * 1000))
        try:
            async with asyncio.timeout(remaining):
                await admin.start()
                cluster = await admin.describe_cluster()
        except TimeoutError:
            return Check.fail("kafka", f"Kafka does not answer: {tried}: the port accepts connections but no Kafka "
                                       f"response came within {timeout_s:.0f}s (is it a Kafka listener, and does its "
                                       f"security protocol match?); {fix}", UNAVAILABLE)
        except KafkaError as exc:
            return Check.fail("kafka", f"Kafka is not usable: {tried}: {exc}; {fix}", UNAVAILABLE)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await admin.close()
    brokers = len(cluster.get("brokers", []))
    return Check.ok("kafka", f"{kafka.bootstrap_servers} ({kafka.security_protocol}): {brokers} broker(s) answer")


def topics_in_use(catalog: TopicCatalog, retry_topics: int | None = None) -> list[str]:
    """The logical ids of the catalog's topics the service uses: every one, but of each source's retry topics only
    the first ``retry_topics`` (one per delay of ``runtime.retry_topic_delays_s``; None: all)."""
    from consumer.topics import retry_topic_id

    used = {retry_topic_id(source, index) for source, spec in catalog.sources().items()
            for index in range(spec.retry_topics if retry_topics is None else min(retry_topics, spec.retry_topics))}
    return [logical for logical, spec in catalog.topics.items() if spec.role != "retry" or logical in used]


async def check_topics(catalog: TopicCatalog, kafka: KafkaSettings, timeout_s: float = KAFKA_TIMEOUT_S, *,
                       retry_topics: int | None = None) -> Check:
    """Do the topics the service uses exist (``topics_in_use``)? Missing ones are named, with the command that
    creates them."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError

    from consumer.kafka import connection_options

    names = sorted(catalog.name(logical) for logical in topics_in_use(catalog, retry_topics))
    with _quiet_kafka_client():
        admin = AIOKafkaAdminClient(**connection_options(kafka), request_timeout_ms=int(timeout_s * 1000))
        try:
            async with asyncio.timeout(timeout_s):
                await admin.start()
                described = await admin.describe_topics(names)
        except (TimeoutError, KafkaError) as exc:
            return Check.fail("topics", f"the topics could not be described: {exc or type(exc).__name__}",
                              UNAVAILABLE)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await admin.close()
    missing = sorted(topic["topic"] for topic in described
                     if topic["error_code"] == UnknownTopicOrPartitionError.errno)
    if not missing:
        return Check.ok("topics", f"all {len(names)} topics the service uses exist")
    if len(missing) == len(names) and catalog.prefix:
        return Check.fail("topics", f"none of the catalog's {len(names)} topics exists under topic_prefix "
                                    f"{catalog.prefix!r} ({env_name('topic_prefix')}; e.g. {missing[0]}): is the "
                                    "prefix right? If it is, create them with `ipaas-klaviyo topics apply`")
    return Check.fail("topics", f"{len(missing)} of the catalog's {len(names)} topics are missing: "
                                f"{', '.join(missing)}; create them with `ipaas-klaviyo topics apply`")
