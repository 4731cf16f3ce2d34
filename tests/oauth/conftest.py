"""Fixtures for the OAuth tests: the Klaviyo simulator, OAuth settings pointing at it, and a fake browser."""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from consumer.settings import Settings
from simulators.klaviyo import (
    DEFAULT_OAUTH_CLIENT_ID,
    DEFAULT_OAUTH_CLIENT_SECRET,
    KlaviyoSimulator,
    SimulatorConfig,
)

REDIRECT = "http://127.0.0.1:0/oauth/callback"
"""Port 0: the loopback receiver binds a free port and sends the real one to Klaviyo."""


@pytest.fixture
async def simulator() -> AsyncIterator[KlaviyoSimulator]:
    async with KlaviyoSimulator(SimulatorConfig(seed=3, rate_limits_enabled=False)) as sim:
        yield sim


def oauth_settings(sim: KlaviyoSimulator, tmp_path: Path, **oauth: Any) -> Settings:
    values: dict[str, Any] = {
        "client_id": DEFAULT_OAUTH_CLIENT_ID,
        "client_secret": DEFAULT_OAUTH_CLIENT_SECRET,
        "redirect_url": REDIRECT,
        "token_file": tmp_path / "secrets" / "klaviyo-tokens.json",
        **oauth,
    }
    return Settings.model_validate({
        "klaviyo": {"base_url": sim.base_url, "connect_timeout_s": 2.0, "read_timeout_s": 5.0,
                    "total_timeout_s": 10.0, "rate_limit": False},
        "oauth": values,
    })


# --- a browser: urllib, which logs nothing (the callback URL carries the one-time code) ---------------------------
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_NO_FOLLOW = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


def _approve(url: str) -> str:
    try:
        _NO_FOLLOW.open(url, timeout=10)
    except urllib.error.HTTPError as exc:
        if exc.code in (302, 303):
            return str(exc.headers["location"])
        raise
    raise AssertionError("the authorize page did not redirect")


def _open(url: str) -> int:
    try:
        with _DIRECT.open(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def approve(authorize_url: str) -> str:
    """What the subscriber's browser does on Klaviyo's authorize page: the redirect (Location) it gets back."""
    return await asyncio.to_thread(_approve, authorize_url)


async def visit(url: str) -> int:
    """The browser following a redirect to the loopback receiver; the page's status."""
    return await asyncio.to_thread(_open, url)


class Browser:
    """``show_url`` for ``authorize``: approves at Klaviyo and follows the redirect, like a subscriber would."""

    def __init__(self, tamper: Any = None) -> None:
        self.urls: list[str] = []
        self.locations: list[str] = []
        self.tamper = tamper
        self.status: int | None = None

    async def __call__(self, url: str) -> None:
        self.urls.append(url)
        asyncio.get_running_loop().create_task(self._go(url))

    async def _go(self, url: str) -> None:
        location = await approve(url)
        self.locations.append(location)
        if self.tamper is not None:
            location = self.tamper(location)
        self.status = await visit(location)


def assert_no_secrets(texts: Iterable[str], secrets: Iterable[str]) -> None:
    """None of the secret values appears in any text."""
    values = [s for s in secrets if s and len(s) >= 6]
    assert values, "no secrets collected: the check would prove nothing"
    for text in texts:
        for secret in values:
            assert secret not in text, f"a secret leaked into: {text[:200]!r}"


def log_texts(records: Iterable[logging.LogRecord]) -> list[str]:
    """Every log record as text: message, arguments, every extra field and the exception."""
    texts = []
    for record in records:
        texts.append(record.getMessage())
        texts.append(repr(record.__dict__))
        if record.exc_info and record.exc_info[1] is not None:
            texts.append(repr(record.exc_info[1]))
            texts.append(str(record.exc_info[1]))
    return texts


def simulator_secrets(sim: KlaviyoSimulator) -> set[str]:
    """Every code and token the simulator's OAuth server holds, plus the client secret."""
    oauth = sim.state.oauth
    return {DEFAULT_OAUTH_CLIENT_SECRET, *oauth.codes, *oauth.access_tokens, *oauth.refresh_tokens}


def codes_in(locations: Iterable[str]) -> set[str]:
    """The authorization codes of redirects."""
    from urllib.parse import parse_qs, urlsplit

    return {code for location in locations for code in parse_qs(urlsplit(location).query).get("code", [])}


@pytest.fixture
def captured_requests(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every ``AuthorizationRequest`` the flow made (its state and code verifier are secrets to look for)."""
    from consumer.oauth import flow

    made: list[Any] = []
    original = flow.new_authorization_request

    def spy(*args: Any, **kwargs: Any) -> Any:
        request = original(*args, **kwargs)
        made.append(request)
        return request

    monkeypatch.setattr(flow, "new_authorization_request", spy)
    return made
