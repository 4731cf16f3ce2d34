"""Auth strategies: API key, bearer tokens from a provider with one refresh on 401, and masking."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from consumer.errors import Outage
from consumer.klaviyo import ApiKeyAuth, BearerTokenAuth, KlaviyoRejected, ProfileAttributes, TokenProvider
from consumer.settings import KlaviyoSettings
from simulators.klaviyo import KlaviyoSimulator
from tests.support.klaviyo_oauth import SimulatorTokenProvider

from .conftest import MakeClient

KEY = "pk_abcdefghijklmnopqrstuvwxyz01234567"


async def test_api_key_header_and_masked_repr() -> None:
    auth = ApiKeyAuth(SecretStr(KEY))
    assert await auth.authorization() == f"Klaviyo-API-Key {KEY}"
    assert KEY not in repr(auth) and KEY not in str(auth)
    assert KEY not in auth.account_key and auth.account_key == ApiKeyAuth(KEY).account_key
    assert not await auth.refresh(f"Klaviyo-API-Key {KEY}")


def test_api_key_from_settings() -> None:
    assert list(ApiKeyAuth.from_settings(KlaviyoSettings(api_key=KEY)).secrets()) == [KEY]
    with pytest.raises(ValueError):
        ApiKeyAuth.from_settings(KlaviyoSettings())
    with pytest.raises(ValueError):
        ApiKeyAuth("")


class StaticProvider:
    def __init__(self) -> None:
        self.tokens = ["tok-one-aaaaaaaa", "tok-two-bbbbbbbb"]
        self.stale: list[str] = []

    async def get_token(self) -> str:
        return self.tokens[0]

    async def refresh_token(self, stale: str) -> str:
        self.stale.append(stale)
        self.tokens.pop(0)
        return self.tokens[0]


async def test_bearer_auth_refreshes_with_the_stale_token_and_remembers_secrets() -> None:
    provider = StaticProvider()
    assert isinstance(provider, TokenProvider)
    auth = BearerTokenAuth(provider, account="acct-9")
    header = await auth.authorization()
    assert header == "Bearer tok-one-aaaaaaaa"
    assert await auth.refresh(header)
    assert provider.stale == ["tok-one-aaaaaaaa"]
    assert await auth.authorization() == "Bearer tok-two-bbbbbbbb"
    assert set(auth.secrets()) == {"tok-one-aaaaaaaa", "tok-two-bbbbbbbb"}
    assert "tok-" not in repr(auth) and auth.account_key == "acct-9"


async def test_expired_access_token_is_refreshed_once_and_the_call_succeeds(
    make_client: MakeClient, simulator: KlaviyoSimulator
) -> None:
    provider = SimulatorTokenProvider(simulator.base_url)
    try:
        client = make_client(auth=BearerTokenAuth(provider))
        first = await client.create_profile(ProfileAttributes(email="oauth@shop.test"))
        stale = provider.access
        simulator.state.oauth.expire_access_tokens()
        fetched = await client.get_profile(first.id)
        assert fetched.id == first.id
        assert provider.refresh_calls == [stale]
        assert [r.status for r in simulator.received("get_profile")] == [401, 200]
        assert {r.auth_scheme for r in simulator.received("get_profile")} == {"Bearer"}
    finally:
        await provider.aclose()


class UselessRefresh(StaticProvider):
    async def refresh_token(self, stale: str) -> str:
        self.stale.append(stale)
        return "still-not-valid-token"


async def test_a_second_401_after_the_refresh_is_raised(make_client: MakeClient, simulator: KlaviyoSimulator) -> None:
    provider = UselessRefresh()
    with pytest.raises(KlaviyoRejected) as caught:
        await make_client(auth=BearerTokenAuth(provider)).get_profile("x")
    assert caught.value.http_status == 401 and caught.value.outage is Outage.UNAUTHORIZED
    assert provider.stale == ["tok-one-aaaaaaaa"]  # asked exactly once
    assert len(simulator.received("get_profile")) == 2
