"""``ipaas-klaviyo authorize`` and ``ipaas-klaviyo revoke``: the operator's view, and the error log it writes."""

from __future__ import annotations

import argparse
import contextlib
import webbrowser
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer import cli, topics
from consumer.catalog import AUTHORIZATION_DATA_MISSING, CLIENT_ID_NOT_CONFIGURED, CLIENT_SECRET_NOT_CONFIGURED
from consumer.oauth import TokenSet, TokenStore
from consumer.settings import Settings
from simulators.klaviyo import DEFAULT_OAUTH_CLIENT_ID, DEFAULT_OAUTH_CLIENT_SECRET, KlaviyoSimulator
from tests.support.kafka import create_catalog_topics, read_all
from tests.support.service import service_settings
from tests.support.topic_space import TopicSpace

from .conftest import _approve, _open, assert_no_secrets, oauth_settings, simulator_secrets


def _args(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(list(argv))


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``webbrowser.open`` becomes a subscriber who approves at once (it runs in a worker thread)."""
    locations: list[str] = []

    def open_url(url: str, *args: Any, **kwargs: Any) -> bool:
        location = _approve(url)
        locations.append(location)
        with contextlib.suppress(OSError):  # nothing listening: the browser shows an error page, like a real one
            _open(location)
        return True

    monkeypatch.setattr(webbrowser, "open", open_url)
    return locations


def test_the_parser_has_authorize_and_revoke() -> None:
    args = _args("authorize", "--paste", "--no-browser", "--timeout", "30", "--no-error-log")
    assert args.handler is cli._authorize and args.paste and args.no_browser and args.timeout == 30.0
    assert _args("authorize").timeout == 300.0 and not _args("authorize").paste
    assert _args("revoke", "--force").handler is cli._revoke and _args("revoke", "--force").force


async def test_authorize_then_revoke(
    simulator: KlaviyoSimulator, tmp_path: Path, browser: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = oauth_settings(simulator, tmp_path)
    assert await cli._authorize(_args("authorize", "--no-error-log"), settings) == 0
    out, err = capsys.readouterr()
    assert f"{simulator.base_url}/oauth/authorize?" in out and "code_challenge_method=S256" in out
    assert f"tokens stored in {settings.oauth.token_file}" in out
    tokens = TokenStore(settings.oauth.token_file).load()
    assert tokens is not None
    secrets = {*simulator_secrets(simulator), *tokens.secrets()}

    assert await cli._revoke(_args("revoke"), settings) == 0
    revoked_out, _ = capsys.readouterr()
    assert "revoked" in revoked_out and not settings.oauth.token_file.exists()
    assert await cli._revoke(_args("revoke"), settings) == 1
    _, nothing = capsys.readouterr()
    assert "no token file" in nothing
    assert_no_secrets([out, err, revoked_out, nothing], secrets)


async def test_authorize_with_a_pasted_redirect(
    simulator: KlaviyoSimulator, tmp_path: Path, browser: list[str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("builtins.input", lambda prompt="": browser[-1])
    settings = oauth_settings(simulator, tmp_path, redirect_url="http://127.0.0.1:1/never-served")
    assert await cli._authorize(_args("authorize", "--paste", "--no-error-log"), settings) == 0
    assert TokenStore(settings.oauth.token_file).load() is not None
    assert simulator.received("oauth_token")[0].body["redirect_uri"] == "http://127.0.0.1:1/never-served"


async def test_a_catalog_error_is_shown_with_what_to_do(
    simulator: KlaviyoSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = oauth_settings(simulator, tmp_path, client_id=None)
    assert await cli._authorize(_args("authorize", "--no-error-log"), settings) == 2  # a setting is missing
    _, err = capsys.readouterr()
    assert f"ipaas-klaviyo: Client ID Not Configured: {CLIENT_ID_NOT_CONFIGURED.message}" in err
    assert CLIENT_ID_NOT_CONFIGURED.meaning in err and CLIENT_ID_NOT_CONFIGURED.action in err
    assert f"self-hosted: {CLIENT_ID_NOT_CONFIGURED.operator_hint}" in err


@pytest.mark.kafka
async def test_an_authorize_error_is_written_to_the_error_log_at_connection_time(
    kafka_bootstrap: str, topic_space: TopicSpace, unique: str, simulator: KlaviyoSimulator, tmp_path: Path,
    browser: list[str], capsys: pytest.CaptureFixture[str],
) -> None:
    settings: Settings = service_settings(topic_space, unique, klaviyo={"base_url": simulator.base_url}, oauth={
        "client_id": DEFAULT_OAUTH_CLIENT_ID, "client_secret": DEFAULT_OAUTH_CLIENT_SECRET,
        "redirect_url": "http://127.0.0.1:0/oauth/callback", "token_file": tmp_path / "tokens.json"})
    catalog = topics.TopicCatalog.load(settings.topics_file, settings.topic_prefix)
    await create_catalog_topics(kafka_bootstrap, catalog, ["error-log"])
    simulator.state.oauth.deny_next = 1

    assert await cli._authorize(_args("authorize"), settings) == 1

    _, err = capsys.readouterr()
    assert f"Authorization Data Missing: {AUTHORIZATION_DATA_MISSING.message}" in err
    [record] = await read_all(kafka_bootstrap, catalog.name("error-log"), expected=1)
    entry = orjson.loads(record.value)
    assert record.key is None
    assert entry["code"] == "AUTHORIZATION_DATA_MISSING" and entry["flow"] == "authorization"
    assert entry["message"] == AUTHORIZATION_DATA_MISSING.message and entry["transfer"] is None
    assert "access_denied" in entry["detail"] and not entry["dead_lettered"]


@pytest.mark.kafka
@pytest.mark.parametrize(("missing", "entry"), [("client_id", CLIENT_ID_NOT_CONFIGURED),
                                                ("client_secret", CLIENT_SECRET_NOT_CONFIGURED)])
async def test_run_without_the_oauth_app_says_so_in_one_line_and_in_the_error_log(
    kafka_bootstrap: str, topic_space: TopicSpace, unique: str, simulator: KlaviyoSimulator, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], missing: str, entry: Any,
) -> None:
    oauth = {"client_id": DEFAULT_OAUTH_CLIENT_ID, "client_secret": DEFAULT_OAUTH_CLIENT_SECRET,
             "token_file": tmp_path / "tokens.json", missing: None}
    settings: Settings = service_settings(topic_space, unique, klaviyo={"base_url": simulator.base_url},
                                          oauth=oauth, runtime={"retry_topic_delays_s": []})
    TokenStore(settings.oauth.token_file).save(TokenSet("access-value-1234", "refresh-value-5678", None))
    catalog = topics.TopicCatalog.load(settings.topics_file, settings.topic_prefix)
    await create_catalog_topics(kafka_bootstrap, catalog, [name for name, spec in catalog.topics.items()
                                                           if spec.role != "retry"])

    assert await cli._run(_args("run"), settings) == 2  # the documented exit code of a configuration problem

    _, err = capsys.readouterr()
    # one line for the operator (the rest of stderr is the JSON log, when logging is configured)
    said = [line for line in err.splitlines() if line.startswith("ipaas-klaviyo: ")]
    assert said == [f"ipaas-klaviyo: {entry.message} (oauth.{missing} is not set)"]
    [record] = await read_all(kafka_bootstrap, catalog.name("error-log"), expected=1)
    logged = orjson.loads(record.value)
    assert (logged["code"], logged["flow"], logged["message"]) == (entry.code, "authorization", entry.message)
    assert logged["transfer"] is None and not logged["dead_lettered"]
    assert_no_secrets([err, record.value.decode()], {DEFAULT_OAUTH_CLIENT_SECRET, "refresh-value-5678"})
