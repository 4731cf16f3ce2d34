"""``ipaas-klaviyo status``: the integration on one screen.

Per source topic: lag (records) and time lag (age of the oldest unfinished record), whether it is consuming or
paused and why (a destination it needs that is out, with that destination's state; a dead-letter topic that does
not answer; backpressure), and its dead letters waiting by error code. Above: the Klaviyo authorization state, the
destinations and the profile poller's watermark.

The document is built by ``build_status`` from a ``KafkaView`` snapshot, plus what only a running service knows
(``ServiceState``). The service serves it at ``/status``; ``ipaas-klaviyo exporter`` serves it without a
service part; ``read_status`` gets it from either, else builds it from Kafka alone. Without a service the pause
state, the destinations and the authorization are unknown: the document lists them under ``unavailable``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from consumer.timefmt import format_time

if TYPE_CHECKING:
    from consumer.kafka_view import ViewSnapshot
    from consumer.runtime.engine import RuntimeHealth
    from consumer.settings import Settings
    from consumer.topics import TopicCatalog

SERVICE_ONLY = ("pause_state", "destinations", "authorization")
"""The fields only a running service knows."""

GLOBAL_PAUSES = {"dead_letter_unavailable": "dead-letter topic unavailable", "backpressure": "backpressure"}


@dataclass(frozen=True)
class ServiceState:
    """What only the running service knows (read from the HTTP thread: every field is replaced, never mutated)."""

    health: RuntimeHealth
    needs: Callable[[str], frozenset[str]]
    """The destinations a source topic needs (``RoutingTable.needs_of``)."""
    destinations: Sequence[str]
    """Every destination the service calls."""
    authorization: Callable[[], str | None]
    poller_in_service: bool
    poller_last_poll: Callable[[], float | None]


def _iso(seconds: float | None) -> str | None:
    return format_time(datetime.fromtimestamp(seconds, UTC)) if seconds else None


def build_status(snapshot: ViewSnapshot, catalog: TopicCatalog, *, source: str,
                 service: ServiceState | None = None, now: float | None = None) -> dict[str, Any]:
    """The status document (JSON-ready); ``source`` says where it was built (service, exporter, kafka)."""
    now = time.time() if now is None else now
    health = service.health if service is not None else None
    down: Mapping[str, str] = (health.destinations or {}) if health is not None else {}
    running = health is not None and health.started and not health.stopped
    lag_by_topic: dict[str, list[dict[str, Any]]] = {}
    for row in snapshot.lag or ():
        age = row.age_s(now)
        lag_by_topic.setdefault(row.topic, []).append({
            "partition": row.partition, "committed": row.committed, "end": row.end, "lag": row.lag,
            "time_lag_s": None if age is None else round(age, 3)})
    waiting: dict[str, dict[str, int]] = {}
    replayed: dict[str, int] = {}
    for (topic, _flow, code), count in (snapshot.dead_letters or {}).items():
        if count.waiting:
            by_code = waiting.setdefault(topic, {})
            by_code[code] = by_code.get(code, 0) + count.waiting
        replayed[topic] = replayed.get(topic, 0) + count.replayed
    topics = []
    for name in sorted({catalog.name(logical) for logical in catalog.sources()} | set(lag_by_topic)):
        partitions = sorted(lag_by_topic.get(name, []), key=lambda p: p["partition"])
        ages = [p["time_lag_s"] for p in partitions if p["time_lag_s"] is not None]
        entry: dict[str, Any] = {
            "topic": name,
            "lag": sum(p["lag"] for p in partitions) if partitions else None,  # None: not read, or no such topic
            "time_lag_s": max(ages) if ages else (0.0 if partitions and not any(p["lag"] for p in partitions)
                                                  else None),
            "partitions": partitions,
            "dead_letters_waiting": (sum(waiting.get(name, {}).values())
                                     if snapshot.dead_letters is not None else None),
            "dead_letters_waiting_by_code": dict(sorted(waiting.get(name, {}).items())),
            "dead_letters_replayed": replayed.get(name, 0) if snapshot.dead_letters is not None else None,
        }
        if service is not None and health is not None:
            needs = sorted(service.needs(name))
            reasons = [f"{destination} {down[destination]}" for destination in needs if destination in down]
            reasons += [text for reason, text in GLOBAL_PAUSES.items() if reason in health.paused]
            entry["needs"] = needs
            entry["state"] = ("not running" if not running else "paused" if reasons else "consuming")
            entry["pause_reasons"] = reasons
        topics.append(entry)
    watermark = snapshot.poller_watermark
    poller: dict[str, Any] = {
        "name": snapshot.poller_name,
        "watermark": format_time(watermark) if watermark else None,
        "watermark_age_s": round(now - watermark.timestamp(), 3) if watermark else None,
    }
    document: dict[str, Any] = {
        "source": source,
        "generated_at": _iso(now),
        "group_id": snapshot.group_id,
        "lag_read_at": _iso(snapshot.lag_at),
        "dead_letters_read_at": _iso(snapshot.dead_letters_at),
        "errors": dict(snapshot.errors),
        "unavailable": [] if service is not None else list(SERVICE_ONLY),
    }
    if service is not None and health is not None:
        poller["in_service"] = service.poller_in_service
        poller["last_poll"] = _iso(service.poller_last_poll()) if service.poller_in_service else None
        document["service"] = {"running": running, "ready": health.ready(), "partitions": health.partitions,
                               "paused": sorted(health.paused)}
        document["authorization"] = service.authorization()
        document["destinations"] = {name: down.get(name, "up") for name in sorted(service.destinations)}
    document["poller"] = poller
    document["topics"] = topics
    return document


async def kafka_status(settings: Settings, catalog: TopicCatalog) -> dict[str, Any]:
    """The status from Kafka alone (one reading of the group, the dead-letter topics and the poller's state)."""
    from consumer.kafka_view import KafkaView

    view = KafkaView.for_settings(settings, catalog, publish=False)
    await view.start()
    try:
        snapshot = await view.refresh()
    finally:
        await view.close()
    return build_status(snapshot, catalog, source="kafka")


def service_url(settings: Settings) -> str:
    """Where the service (or the exporter) of these settings serves ``/status``."""
    host = settings.http.host
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    return f"http://{host}:{settings.http.port}"


async def read_status(settings: Settings, catalog: TopicCatalog, *, url: str | None = None,
                      kafka_only: bool = False, timeout_s: float = 5.0) -> tuple[dict[str, Any], str]:
    """The status document and where it came from: the service's (or exporter's) ``/status`` at ``url`` (default:
    ``service_url``), else (nothing answers, or ``kafka_only``) built from Kafka alone."""
    import httpx

    base = (url or service_url(settings)).rstrip("/")
    address = base if base.endswith("/status") else base + "/status"
    if not kafka_only:
        try:
            async with httpx.AsyncClient(timeout=timeout_s) as client:
                response = await client.get(address)
            if response.status_code == 200:
                return response.json(), address
            why = f"{address} answered {response.status_code}"
        except (httpx.HTTPError, ValueError) as exc:
            why = f"nothing answered at {address}: {type(exc).__name__}"
    else:
        why = "asked for Kafka alone"
    return await kafka_status(settings, catalog), why


# --- text ----------------------------------------------------------------------------------------------------------
def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, whole = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {whole:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    return f"{hours // 24}d {hours % 24:02d}h"


def format_status(document: Mapping[str, Any], *, where: str = "") -> str:
    """The document as one screen of text."""
    source = document.get("source")
    origin = {"service": "the running service", "exporter": "the exporter (from Kafka)",
              "kafka": "Kafka alone"}.get(str(source), str(source))
    lines = [f"ipaas-klaviyo status, from {origin}{f' ({where})' if where else ''}; "
             f"consumer group {document.get('group_id')}"]
    unavailable = document.get("unavailable") or []
    if unavailable:
        lines.append("Without the service, unknown: " + ", ".join(str(u).replace("_", " ") for u in unavailable))
    if "authorization" in document:
        lines.append(f"Klaviyo authorization: {document['authorization'] or 'unknown'}")
    if "destinations" in document:
        lines.append("Destinations: " + (", ".join(f"{name} {state}" for name, state in
                                                    document["destinations"].items()) or "none"))
    service = document.get("service")
    if service and not service.get("running"):
        lines.append("Service: not consuming (starting or stopping)")
    poller = document.get("poller") or {}
    text = f"Poller {poller.get('name')}: "
    if poller.get("watermark"):
        text += f"watermark {poller['watermark']} ({_duration(poller.get('watermark_age_s'))} ago)"
    else:
        text += "no watermark stored"
    if poller.get("in_service"):
        text += f"; runs in the service, last poll {poller.get('last_poll') or 'none yet'}"
    lines.append(text)
    for part, problem in (document.get("errors") or {}).items():
        lines.append(f"! reading {part.replace('_', ' ')} from Kafka failed: {problem}")
    rows = [("SOURCE TOPIC", "LAG", "OLDEST WAITING", "STATE", "DEAD LETTERS WAITING")]
    for topic in document.get("topics") or []:
        lag = "?" if topic.get("lag") is None else str(topic["lag"])
        oldest = "-" if not topic.get("lag") else _duration(topic.get("time_lag_s"))
        state = topic.get("state", "unknown")
        if topic.get("pause_reasons"):
            state += ": " + ", ".join(topic["pause_reasons"])
        waiting = topic.get("dead_letters_waiting")
        letters = "?" if waiting is None else str(waiting)
        if topic.get("dead_letters_waiting_by_code"):
            letters += " (" + ", ".join(f"{code} {count}" for code, count in
                                        topic["dead_letters_waiting_by_code"].items()) + ")"
        rows.append((topic["topic"], lag, oldest, state, letters))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines.append("")
    for row in rows:
        lines.append("  ".join([row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]),
                                row[3].ljust(widths[3]), row[4]]).rstrip())
    return "\n".join(lines)
