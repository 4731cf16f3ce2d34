"""Service settings: environment variables (prefix ``IPAAS_KLAVIYO_``, nested with ``__``) and a TOML file.

The file is ``ipaas-klaviyo.toml`` in the working directory, or the path in ``IPAAS_KLAVIYO_SETTINGS_FILE``.
Environment variables win over the file. Every secret is a ``SecretStr``: it never prints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

SETTINGS_FILE_ENV = "IPAAS_KLAVIYO_SETTINGS_FILE"
DEFAULT_SETTINGS_FILE = "ipaas-klaviyo.toml"


class KafkaSettings(BaseModel):
    """Connection to the Kafka cluster, including managed clusters (SASL_SSL / SSL)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "ipaas-klaviyo"
    group_id: str = "ipaas-klaviyo"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"


class RuntimeSettings(BaseModel):
    """Limits of the consumer runtime."""

    max_in_flight: int = Field(256, ge=1, description="handlers running at once, over all keys")
    max_buffered: int = Field(2048, ge=1, description="records fetched but not finished; above it, pause")
    fetch_max_records: int = Field(500, ge=1)
    commit_interval_s: float = Field(1.0, gt=0)
    drain_timeout_s: float = Field(20.0, ge=0, description="on revoke/shutdown, wait this long for in-flight")
    max_value_bytes: int = Field(1_048_576, ge=1, description="larger values are poison pills")
    retry_attempts: int = Field(5, ge=1, description="default attempts before dead-lettering")
    retry_base_delay_s: float = Field(0.5, ge=0)
    retry_max_delay_s: float = Field(30.0, ge=0)
    infrastructure_max_delay_s: float = Field(60.0, ge=0)


class KlaviyoSettings(BaseModel):
    base_url: str = "https://a.klaviyo.com"
    revision: str = "2026-07-15"
    api_key: SecretStr | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    total_timeout_s: float = 60.0
    max_connections: int = 100
    rate_limit: bool = True
    max_retries: int = 4
    generate_events: bool = True
    batch_events: bool = Field(True, description="send the events of many records together (bulk jobs filled "
                                                 "across records); off: each record's events in requests of their own")
    event_linger_ms: float = Field(50.0, ge=0, description="how long the oldest queued event waits for others "
                                                           "before a request leaves")


class IpaasSettings(BaseModel):
    base_url: str = "https://api.ipaas.com"
    api_token: SecretStr | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    total_timeout_s: float = 60.0
    max_connections: int = 50
    max_retries: int = 4
    system_id: int = Field(1, ge=1, description="the subscription's system id that external ids are kept under")


class PollerSettings(BaseModel):
    """The Klaviyo profile change source (``ipaas-klaviyo poll-profiles``, or inside the service)."""

    in_service: bool = Field(False, description="also run the poller inside `ipaas-klaviyo run`")
    name: str = Field("klaviyo-profiles", description="the watermark's key in the poller-state topic")
    interval_s: float = Field(60.0, gt=0, description="seconds between polls")
    page_size: int = Field(100, ge=1, le=100, description="profiles per page")


class OAuthSettings(BaseModel):
    client_id: str | None = None
    client_secret: SecretStr | None = None
    redirect_url: str | None = None
    scopes: list[str] = Field(
        default_factory=lambda: ["profiles:read", "profiles:write", "events:read", "events:write"]
    )
    token_file: Path = Path(".run/klaviyo-tokens.json")
    token_key: SecretStr | None = None


class HttpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 9400


class Settings(BaseSettings):
    """All settings of the service."""

    model_config = SettingsConfigDict(
        env_prefix="IPAAS_KLAVIYO_", env_nested_delimiter="__", extra="ignore", toml_file=None
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    klaviyo: KlaviyoSettings = Field(default_factory=KlaviyoSettings)
    ipaas: IpaasSettings = Field(default_factory=IpaasSettings)
    oauth: OAuthSettings = Field(default_factory=OAuthSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    poller: PollerSettings = Field(default_factory=PollerSettings)
    topics_file: Path | None = Field(None, description="topic catalog; default: the shipped topics/topics.yaml")
    mapping_dir: Path | None = Field(None, description="mapping collections replacing the shipped defaults")
    topic_prefix: str = Field("", description="prepended to every topic name of the catalog")
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = Path(os.environ.get(SETTINGS_FILE_ENV, DEFAULT_SETTINGS_FILE))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment and the settings file, with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
