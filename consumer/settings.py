"""Service settings: environment variables (prefix ``IPAAS_KLAVIYO_``, nested with ``__``) and a TOML file.

The file is ``ipaas-klaviyo.toml`` in the working directory, or the path in ``IPAAS_KLAVIYO_SETTINGS_FILE``.
Environment variables win over the file. Every secret is a ``SecretStr``: it never prints.

``load_settings`` is strict: a named settings file that does not exist, malformed TOML, an unknown key in the file
or an unknown ``IPAAS_KLAVIYO_*`` variable, and an invalid value are ``InvalidSettings``, whose lines name the
setting (its variable, or the file and line) and the fix (for a misspelling, the nearest known name).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import SettingsError as SourceError

ENV_PREFIX = "IPAAS_KLAVIYO_"
SETTINGS_FILE_ENV = "IPAAS_KLAVIYO_SETTINGS_FILE"
DEFAULT_SETTINGS_FILE = "ipaas-klaviyo.toml"
# variables with the prefix that are not settings: the settings file's path, and the development tooling's
OTHER_VARIABLES = frozenset({SETTINGS_FILE_ENV, "IPAAS_KLAVIYO_KAFKA_HOME", "IPAAS_KLAVIYO_METRICS_TARGET"})
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class InvalidSettings(ValueError):
    """The settings cannot be used. Each of ``problems`` is one line: the setting, where it was set, the fix."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def _base_url(value: str) -> str:
    """An API base URL: http(s), a host, no query or fragment, and no ``/api`` (the clients add their paths)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{value!r} needs an http:// or https:// scheme")
    if not parts.hostname:
        raise ValueError(f"{value!r} has no host")
    if parts.query or parts.fragment:
        raise ValueError(f"{value!r} must not carry a query or fragment")
    if "api" in parts.path.lower().split("/"):
        raise ValueError(f"{value!r} has /api in its path, which the client adds itself: "
                         f"use {parts.scheme}://{parts.netloc}")
    return value


BaseUrl = Annotated[str, AfterValidator(_base_url)]


def _blank_is_missing(value: Any) -> Any:
    """An empty (or blank) credential is no credential: ``IPAAS_KLAVIYO_KLAVIYO__API_KEY=`` leaves it unset."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    return None if isinstance(text, str) and not text.strip() else value


Credential = Annotated[SecretStr | None, BeforeValidator(_blank_is_missing)]


class KafkaSettings(BaseModel):
    """Connection to the Kafka cluster, including managed clusters (SASL_SSL / SSL)."""

    model_config = ConfigDict(extra="forbid")

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

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        servers = [server.strip() for server in value.split(",")]
        for server in servers:
            host, _, port = server.rpartition(":") if ":" in server else (server, "", "9092")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{server!r} is not host:port (a comma-separated list: broker-1:9092,broker-2:9092)")
        return ",".join(servers)


class RuntimeSettings(BaseModel):
    """Limits of the consumer runtime."""

    model_config = ConfigDict(extra="forbid")

    max_in_flight: int = Field(256, ge=1, description="handler calls working at once (waiting ones do not count)")
    max_buffered: int = Field(2048, ge=1, description="records fetched but not finished; above it, pause")
    fetch_max_records: int = Field(500, ge=1)
    fetch_max_bytes: int = Field(
        1_048_576, ge=1024, description="bytes per fetch over all partitions (what a pause may have to drop)")
    partition_fetch_max_bytes: int = Field(
        262_144, ge=1024, description="bytes per partition per fetch (a larger record still comes whole)")
    commit_interval_s: float = Field(1.0, gt=0)
    drain_timeout_s: float = Field(20.0, ge=0, description="on revoke/shutdown, wait this long for in-flight")
    max_value_bytes: int = Field(1_048_576, ge=1, description="larger values are poison pills")
    retry_attempts: int = Field(5, ge=1, description="default attempts before dead-lettering")
    retry_base_delay_s: float = Field(0.5, ge=0)
    retry_max_delay_s: float = Field(30.0, ge=0)
    infrastructure_max_delay_s: float = Field(60.0, ge=0)
    retry_topic_delays_s: list[float] = Field(
        [1200.0, 3600.0, 7200.0, 12000.0],
        description="delays of the retry topics a retryable failure goes through after its in-process attempts, "
                    "before its dead letter (iPaaS.com's 10*n*(n+1) minutes: 20 min, 1 h, 2 h, 3 h 20 min); "
                    "empty: dead-letter at once")

    @field_validator("retry_topic_delays_s")
    @classmethod
    def _delays_grow(cls, delays: list[float]) -> list[float]:
        if any(delay < 0 for delay in delays):
            raise ValueError("retry topic delays must be >= 0 seconds")
        return delays


class KlaviyoSettings(BaseModel):
    """Klaviyo's API: where, which revision, the private key (else OAuth), timeouts and retries."""

    model_config = ConfigDict(extra="forbid")

    base_url: BaseUrl = "https://a.klaviyo.com"
    revision: str = "2026-07-15"
    api_key: Credential = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    total_timeout_s: float = 60.0
    max_connections: int = 100
    rate_limit: bool = True
    max_retries: int = 4
    generate_events: bool = True
    consent_list_id: str | None = Field(
        None, description="the list a SubscribeProfile=true subscription joins; without it consent is not sent")
    list_ids: dict[str, str] = Field(
        default_factory=dict, description="list name -> id for LIST_/UCLIST_ fields (others are found by name)")
    batch_events: bool = Field(True, description="send the events of many records together (bulk jobs filled "
                                                 "across records); off: each record's events in requests of their own")
    event_linger_ms: float = Field(50.0, ge=0, description="how long the oldest queued event waits for others "
                                                           "before a request leaves")
    bulk_profiles: bool = Field(True, description="under a backlog, write customers' profiles in bulk import jobs "
                                                  "(a trickle keeps one request per profile); off: always one by one")
    profile_linger_ms: float = Field(50.0, ge=0, description="how long the oldest queued profile waits for others "
                                                             "before its job (or the per-record path) is chosen")


class IpaasSettings(BaseModel):
    """iPaaS.com's API: where, the token, timeouts and retries, and the subscription's system id."""

    model_config = ConfigDict(extra="forbid")

    base_url: BaseUrl = "https://api.ipaas.com"
    api_token: Credential = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    total_timeout_s: float = 60.0
    max_connections: int = 50
    max_retries: int = 4
    system_id: int = Field(1, ge=1, description="the subscription's system id that external ids are kept under")


class PollerSettings(BaseModel):
    """The Klaviyo profile change source (``ipaas-klaviyo poll-profiles``, or inside the service)."""

    model_config = ConfigDict(extra="forbid")

    in_service: bool = Field(False, description="also run the poller inside `ipaas-klaviyo run`")
    name: str = Field("klaviyo-profiles", description="the watermark's key in the poller-state topic")
    interval_s: float = Field(60.0, gt=0, description="seconds between polls")
    page_size: int = Field(100, ge=1, le=100, description="profiles per page")


class OAuthSettings(BaseModel):
    """Klaviyo OAuth: the app's client id, secret and redirect URL, the scopes, and the token store."""

    model_config = ConfigDict(extra="forbid")

    client_id: str | None = None
    client_secret: SecretStr | None = None
    redirect_url: str | None = None
    scopes: list[str] = Field(
        default_factory=lambda: ["profiles:read", "profiles:write", "events:read", "events:write", "lists:read",
                                 "lists:write", "subscriptions:write"],
        description="what the service's Klaviyo operations need (bulk profile imports, lists and consent too)")
    token_file: Path = Path(".run/klaviyo-tokens.json")
    token_key: SecretStr | None = None


class HttpSettings(BaseModel):
    """Where ``/metrics``, ``/healthz`` and ``/readyz`` are served."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(9400, ge=0, le=65535)


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

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"{value!r} is not a log level ({', '.join(LOG_LEVELS)})")
        return value.upper()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = settings_file()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment and the settings file, with explicit overrides on top.

    Raises ``InvalidSettings`` (see the module's docstring) instead of guessing.
    """
    path = settings_file()
    text, data = _read_file(path) if path is not None else ("", {})
    problems = [*_unknown_in_file(data, path, text), *_unknown_variables(os.environ)]
    if problems:
        raise InvalidSettings(problems)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise InvalidSettings([_explain(error, path, text, data) for error in exc.errors()]) from None
    except SourceError as exc:  # a variable of a list or table setting that is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        prefix = env_name(field.group(1)) if field else ENV_PREFIX
        named = sorted(name for name in os.environ if name.upper().startswith(prefix)) or [prefix]
        raise InvalidSettings([f"{', '.join(named)}: not readable ({exc}); a list setting takes JSON, e.g. "
                               f'{ENV_PREFIX}OAUTH__SCOPES=\'["profiles:read", "profiles:write"]\'']) from None


def settings_file() -> Path | None:
    """The settings file: the one ``IPAAS_KLAVIYO_SETTINGS_FILE`` names (which must exist), else
    ``ipaas-klaviyo.toml`` in the working directory when there is one."""
    named = os.environ.get(SETTINGS_FILE_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            state = "is not a file" if path.exists() else "does not exist"
            raise InvalidSettings([f"{SETTINGS_FILE_ENV} names {named}, which {state}: point it at the settings "
                                   "file, or unset it"])
        return path
    default = Path(DEFAULT_SETTINGS_FILE)
    return default if default.is_file() else None


# --- what the settings are called ------------------------------------------------------------------------------------
def _model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def setting_names(model: type[BaseModel] = Settings, prefix: str = "") -> Iterator[tuple[str, bool]]:
    """Every setting's dotted name (``kafka.bootstrap_servers``) and whether it is a table of settings."""
    for name, field in model.model_fields.items():
        sub = _model_of(field.annotation)
        yield prefix + name, sub is not None
        if sub is not None:
            yield from setting_names(sub, f"{prefix}{name}.")


def env_name(setting: str) -> str:
    """The environment variable of a dotted setting name."""
    return ENV_PREFIX + "__".join(setting.split(".")).upper()


def is_secret(setting: str) -> bool:
    model: type[BaseModel] | None = Settings
    field = None
    for part in setting.split("."):
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return False
        model = _model_of(field.annotation)
    return field is not None and "SecretStr" in str(field.annotation)


def _nearest(name: str, candidates: Sequence[str]) -> str | None:
    """The known name nearest to a misspelled one; a right key in the wrong table counts."""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if close:
        return close[0]
    leaf = name.rsplit(".", 1)[-1].lower()
    for candidate in candidates:
        if candidate.rsplit(".", 1)[-1].lower() == leaf:
            return candidate
    leaves = {candidate.rsplit(".", 1)[-1]: candidate for candidate in candidates}
    close = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.75)
    return leaves[close[0]] if close else None


def _suggestion(nearest: str | None) -> str:
    if nearest is None:
        return "remove it (the settings are listed in the README's Configuration section)"
    return f"did you mean {nearest}?"


# --- the file and the environment --------------------------------------------------------------------------------
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def _read_file(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidSettings([f"settings file {path} cannot be read: {exc}"]) from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_POSITION.search(message)
        where = f"{path} line {found.group(1)}, column {found.group(2)}" if found else str(path)
        reason = _TOML_POSITION.sub("", message)
        raise InvalidSettings([f"{where}: not valid TOML: {reason}"]) from None


def _unknown_in_file(data: Mapping[str, Any], path: Path | None, text: str) -> list[str]:
    names = [name for name, _ in setting_names()]
    problems = []
    for key in _unknown_keys(data, Settings, ""):
        line = _line_of(text, key)
        where = f"{path} line {line}" if line else str(path)
        problems.append(f"{where}: unknown setting {key}; {_suggestion(_nearest(key, names))}")
    return problems


def _unknown_keys(data: Mapping[str, Any], model: type[BaseModel], prefix: str) -> Iterator[str]:
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            yield prefix + key
        elif isinstance(value, dict) and (sub := _model_of(field.annotation)) is not None:
            yield from _unknown_keys(value, sub, f"{prefix}{key}.")


def _unknown_variables(environ: Mapping[str, str]) -> list[str]:
    known = {env_name(name): name for name, _ in setting_names()}
    problems = []
    for variable in sorted(environ):
        upper = variable.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or upper in OTHER_VARIABLES:
            continue
        # compared without the common prefix, which would make every name look alike
        candidates = {name.removeprefix(ENV_PREFIX): name for name in [*known, *OTHER_VARIABLES]}
        nearest = _nearest(upper.removeprefix(ENV_PREFIX), list(candidates))
        problems.append(f"{variable} is not a setting; {_suggestion(nearest and candidates[nearest])}")
    return problems


_HEADER = re.compile(r"^\[\[?\s*([^\]]+?)\s*\]\]?")
_ASSIGNMENT = re.compile(r"^([A-Za-z0-9_\-.\"' ]+?)\s*=")


def _dotted(text: str) -> list[str]:
    return [part.strip().strip("\"'") for part in text.split(".")]


def _line_of(text: str, setting: str) -> int | None:
    """The 1-based line of the TOML file that sets (or opens the table of) a dotted setting, when there is one."""
    wanted = setting.split(".")
    table: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if header := _HEADER.match(line):
            table = _dotted(header.group(1))
            if table == wanted:
                return number
        elif (assignment := _ASSIGNMENT.match(line)) and table + _dotted(assignment.group(1)) == wanted:
            return number
    return None


def _explain(error: Any, path: Path | None, text: str, data: Mapping[str, Any]) -> str:
    """One line for a validation error: the setting, where it was set, what is wrong (never a secret's value)."""
    location = [str(part) for part in error["loc"]]
    known = {name for name, _ in setting_names()}
    setting = ".".join(location)
    while setting not in known and "." in setting:
        setting = setting.rpartition(".")[0]
    variable = env_name(setting)
    if variable in {name.upper() for name in os.environ}:
        where = variable
    elif path is not None and _in_file(data, setting):
        line = _line_of(text, setting)
        where = f"{path} line {line}" if line else str(path)
    else:
        where = variable
    reason = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    shown = ""
    if not is_secret(setting) and isinstance(value, str | int | float | bool) and repr(value) not in reason:
        shown = f" (got {value[:80]!r})" if isinstance(value, str) else f" (got {value!r})"
    return f"setting {setting} ({where}): {reason}{shown}"


def _in_file(data: Mapping[str, Any], setting: str) -> bool:
    node: Any = data
    for part in setting.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def setting_sources(settings: Settings) -> Iterator[tuple[str, str, str]]:
    """(setting, value as shown, where it comes from) of every setting; secrets are masked."""
    path = settings_file()
    data = _read_file(path)[1] if path is not None else {}
    environ = {name.upper() for name in os.environ}
    for setting, is_table in setting_names():
        if is_table:
            continue
        value: Any = settings
        for part in setting.split("."):
            value = getattr(value, part)
        if is_secret(setting):
            shown = "(not set)" if value is None else "********"
        else:
            shown = "(not set)" if value is None else str(value)
        variable = env_name(setting)
        if variable in environ:
            source = variable
        elif path is not None and _in_file(data, setting):
            source = str(path)
        else:
            source = "default"
        yield setting, shown, source
