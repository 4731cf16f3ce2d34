"""A user's mistake ends any command with one clear line and a documented exit code, never a traceback.

Each case runs ``ipaas-klaviyo`` as a subprocess (a short timeout; working directory and settings files in a
scratch folder; no ``IPAAS_KLAVIYO_*`` variable but the case's) against a closed port, a port that accepts and
never answers, or the test broker with the catalog's topics under a prefix of their own.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from consumer import exitcodes, topics
from consumer.settings import KafkaSettings
from simulators.klaviyo import DEFAULT_API_KEY, KlaviyoSimulator

TIMEOUT_S = 40  # a guard: the slowest case waits out the 10 s broker check


@dataclass(frozen=True)
class Case:
    """``ipaas-klaviyo <argv>`` with ``env`` (``{name}`` placeholders: see ``context``) and ``files`` in the
    scratch folder; ``line`` must show on stderr (stdout for ``config check``'s report) with exit ``code``."""

    id: str
    argv: tuple[str, ...]
    line: str
    code: int
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    stdout: bool = False


BROKER = {"IPAAS_KLAVIYO_KAFKA__BOOTSTRAP_SERVERS": "{broker}", "IPAAS_KLAVIYO_TOPIC_PREFIX": "{prefix}",
          "IPAAS_KLAVIYO_KLAVIYO__API_KEY": DEFAULT_API_KEY, "IPAAS_KLAVIYO_KLAVIYO__BASE_URL": "{klaviyo}",
          "IPAAS_KLAVIYO_HTTP__PORT": "0"}
CLOSED = {**BROKER, "IPAAS_KLAVIYO_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:{closed}"}
SILENT = {**BROKER, "IPAAS_KLAVIYO_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:{silent}"}
FILE = {"IPAAS_KLAVIYO_SETTINGS_FILE": "settings.toml"}
UNREACHABLE = "Kafka is not reachable: tried 127.0.0.1:{closed} (security protocol PLAINTEXT)"
SILENCE = "Kafka does not answer: tried 127.0.0.1:{silent} (security protocol PLAINTEXT): the port accepts"

CASES = [
    # --- settings: unknown, malformed, invalid (2) ---------------------------------------------------------------
    Case("misspelled-variable", ("config", "check"), "IPAAS_KLAVIYO_KAFKA__BOOTSTRAP_SERVER is not a setting; did "
         "you mean IPAAS_KLAVIYO_KAFKA__BOOTSTRAP_SERVERS?", 2, {"IPAAS_KLAVIYO_KAFKA__BOOTSTRAP_SERVER": "b:9092"}),
    Case("misspelled-file-key", ("run",), "settings.toml line 2: unknown setting kafka.bootstrap_server; did you "
         "mean kafka.bootstrap_servers?", 2, FILE, {"settings.toml": '[kafka]\nbootstrap_server = "b:9092"\n'}),
    Case("key-in-the-wrong-table", ("errors",), "settings.toml line 3: unknown setting klaviyo.bootstrap_servers; "
         "did you mean kafka.bootstrap_servers?", 2, FILE, {"settings.toml": '[klaviyo]\n\nbootstrap_servers = "b"\n'}),
    Case("missing-settings-file", ("topics", "check"), "IPAAS_KLAVIYO_SETTINGS_FILE names nowhere.toml, which does "
         "not exist", 2, {"IPAAS_KLAVIYO_SETTINGS_FILE": "nowhere.toml"}),
    Case("malformed-toml", ("dlq", "list"), "settings.toml line 1, column 7: not valid TOML", 2, FILE,
         {"settings.toml": "[kafka\nbootstrap_servers = 1\n"}),
    Case("not-a-number", ("errors",), "setting runtime.max_in_flight (IPAAS_KLAVIYO_RUNTIME__MAX_IN_FLIGHT): Input "
         "should be a valid integer", 2, {"IPAAS_KLAVIYO_RUNTIME__MAX_IN_FLIGHT": "lots"}),
    Case("unknown-protocol", ("config", "show"), "setting kafka.security_protocol (settings.toml line 2): Input "
         "should be 'PLAINTEXT'", 2, FILE, {"settings.toml": '[kafka]\nsecurity_protocol = "TLS"\n'}),
    Case("bad-log-level", ("dlq", "list"), "setting log_level (IPAAS_KLAVIYO_LOG_LEVEL): 'loud' is not a log level",
         2, {"IPAAS_KLAVIYO_LOG_LEVEL": "loud"}),
    Case("base-url-with-api", ("run",), "setting klaviyo.base_url (IPAAS_KLAVIYO_KLAVIYO__BASE_URL): "
         "'https://a.klaviyo.com/api' has /api in its path", 2,
         {"IPAAS_KLAVIYO_KLAVIYO__BASE_URL": "https://a.klaviyo.com/api"}),
    Case("base-url-without-scheme", ("poll-profiles", "--once"), "setting ipaas.base_url "
         "(IPAAS_KLAVIYO_IPAAS__BASE_URL): 'api.ipaas.com' needs an http:// or https:// scheme", 2,
         {"IPAAS_KLAVIYO_IPAAS__BASE_URL": "api.ipaas.com"}),
    Case("base-url-with-query", ("config", "check"), "'https://a.klaviyo.com/?key=1' must not carry a query", 2,
         {"IPAAS_KLAVIYO_KLAVIYO__BASE_URL": "https://a.klaviyo.com/?key=1"}),
    Case("scopes-not-json", ("authorize", "--no-browser"), "IPAAS_KLAVIYO_OAUTH__SCOPES: not readable", 2,
         {"IPAAS_KLAVIYO_OAUTH__SCOPES": "profiles:read"}),
    # --- configuration the commands find (2) ----------------------------------------------------------------
    Case("no-client-id", ("authorize", "--no-browser", "--no-error-log"), "ipaas-klaviyo: Client ID Not "
         "Configured: The authorization could not be completed", 2),
    Case("no-klaviyo-credential", ("run",), "No Klaviyo credential: set IPAAS_KLAVIYO_KLAVIYO__API_KEY", 2,
         {name: value for name, value in BROKER.items() if name != "IPAAS_KLAVIYO_KLAVIYO__API_KEY"}),
    Case("bad-mapping-file", ("run",), "add_profile_from_ipaas.yaml, line 1: unknown key 'mappings'", 2,
         {**BROKER, "IPAAS_KLAVIYO_MAPPING_DIR": "maps"},
         {"maps/add_profile_from_ipaas.yaml": "mappings:\n  - target: email\n"}),
    Case("wrong-topic-prefix", ("run",), "none of the catalog's 21 topics exists under topic_prefix 'nosuch.' "
         "(IPAAS_KLAVIYO_TOPIC_PREFIX; e.g. nosuch.", 2, {**BROKER, "IPAAS_KLAVIYO_TOPIC_PREFIX": "nosuch."}),
    Case("sasl-without-user", ("run",), "security protocol SASL_PLAINTEXT needs kafka.sasl_username", 2,
         {**CLOSED, "IPAAS_KLAVIYO_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT"}),
    Case("missing-topic-catalog", ("topics", "apply"), "topic catalog nowhere.yaml is not valid", 2,
         {**BROKER, "IPAAS_KLAVIYO_TOPICS_FILE": "nowhere.yaml"}),
    # --- command-line arguments (2) ---------------------------------------------------------------------------
    Case("unknown-dlq-topic", ("dlq", "list", "--topic", "nope"), "'nope' is not a topic of the catalog", 2, BROKER),
    Case("bad-dead-letter-ref", ("dlq", "show", "x:y"), "'x:y' is not a dead letter reference", 2, BROKER),
    Case("bad-time", ("errors", "--since", "someday"), "'someday' is neither an ISO 8601 time", 2, BROKER),
    Case("unknown-command", ("sync",), "invalid choice: 'sync'", 2),
    # --- the broker or Klaviyo is not there, or the record is not (1) -------------------------------------------
    Case("closed-port-run", ("run",), UNREACHABLE, 1, CLOSED),
    Case("closed-port-topics", ("topics", "check"), UNREACHABLE, 1, CLOSED),
    Case("closed-port-dlq", ("dlq", "show", "0:0"), UNREACHABLE, 1, CLOSED),
    Case("closed-port-poller", ("poll-profiles", "--once"), UNREACHABLE, 1, CLOSED),
    Case("silent-port-check", ("config", "check"), SILENCE, 1, SILENT, stdout=True),
    Case("silent-port-errors", ("errors",), SILENCE, 1, SILENT),
    Case("no-such-dead-letter-partition", ("dlq", "show", "99:0"), "no dead letter at 99:0 in {prefix}ipaas.", 1,
         BROKER),
    Case("unknown-profile", ("poll-profiles", "--profile", "01NOSUCHPROFILE"), "Klaviyo has no profile "
         "'01NOSUCHPROFILE' (404)", 1, BROKER),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        server.close()


@pytest.fixture(scope="module")
async def context(kafka_bootstrap: str, silent_port: int) -> AsyncIterator[dict[str, str]]:
    """What the cases' placeholders stand for: the broker (the catalog applied under a prefix), a closed port, a
    silent one, and a Klaviyo simulator."""
    prefix = f"clierr-{os.urandom(4).hex()}."
    await topics.apply(topics.TopicCatalog.load(None, prefix), KafkaSettings(bootstrap_servers=kafka_bootstrap))
    async with KlaviyoSimulator() as klaviyo:
        yield {"broker": kafka_bootstrap, "prefix": prefix, "closed": str(_free_port()),
               "silent": str(silent_port), "klaviyo": klaviyo.base_url}


def _run(case: Case, context: dict[str, str], folder: Path) -> subprocess.CompletedProcess[str]:
    for name, text in case.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    env = {name: value for name, value in os.environ.items()
           if not name.upper().startswith("IPAAS_KLAVIYO_") and name != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update({name: value.format(**context) for name, value in case.env.items()})
    return subprocess.run([sys.executable, "-m", "consumer.cli", *case.argv], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


def test_the_table_covers_every_operator_command() -> None:
    assert len(CASES) >= 20 and len({case.id for case in CASES}) == len(CASES)
    commands = {case.argv[0] for case in CASES}
    assert {"run", "topics", "dlq", "errors", "poll-profiles", "authorize", "config"} <= commands


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_a_mistake_is_one_line_and_an_exit_code(case: Case, context: dict[str, str], tmp_path: Path) -> None:
    done = await asyncio.to_thread(_run, case, context, tmp_path)
    output = done.stdout if case.stdout else done.stderr
    expected = case.line.format(**context)
    assert expected in output, f"{case.id}: exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    (line,) = [line for line in output.splitlines() if expected in line]
    assert line.startswith("ipaas-klaviyo: ") or (case.stdout and line.startswith("FAIL "))
    assert done.returncode == case.code, f"{case.id}: {done.stderr}"
    assert "Traceback" not in done.stdout + done.stderr


async def test_debug_shows_the_traceback_too(context: dict[str, str], tmp_path: Path) -> None:
    case = Case("debug", ("--debug", "dlq", "list", "--topic", "nope"), "'nope' is not a topic of the catalog", 2,
                BROKER)
    done = await asyncio.to_thread(_run, case, context, tmp_path)
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.rstrip().endswith("ipaas-klaviyo: 'nope' is not a topic of the catalog")
    assert done.returncode == 2


def test_the_exit_codes_are_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    commands = readme.split("## Commands", 1)[1].split("\n## ", 1)[0]
    for code, meaning in ((exitcodes.OK, "done"), (exitcodes.FAILURE, "failed"),
                          (exitcodes.USAGE, "usage or configuration"), (exitcodes.INTERRUPTED, "interrupted")):
        assert f"| `{code}` | {meaning}" in commands
    assert "--debug" in commands and "`ipaas-klaviyo config check` / `config show`" in commands
