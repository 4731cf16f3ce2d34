"""aiokafka client options from settings: one place for connection and security (SASL_SSL / SSL)."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.helpers import create_ssl_context

from consumer.settings import KafkaSettings


def connection_options(settings: KafkaSettings) -> dict[str, Any]:
    """Options shared by consumers, producers and admin clients."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
            certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
            keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        )
    if settings.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return options


def reliable_producer(settings: KafkaSettings, **extra: Any) -> AIOKafkaProducer:
    """An idempotent producer that waits for all in-sync replicas (dead letters, error log, poller)."""
    return AIOKafkaProducer(
        **connection_options(settings), enable_idempotence=True, acks="all", linger_ms=5, **extra
    )
