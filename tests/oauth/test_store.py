"""The token store: a 0600 file written atomically, optionally Fernet-encrypted; tokens never in a repr or message."""

from __future__ import annotations

import importlib.util
import os
import stat
import time
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from consumer.oauth import TokenSet, TokenStore, TokenStoreError

ACCESS = "access-token-value-0123456789"
REFRESH = "refresh-token-value-9876543210"
HAS_CRYPTOGRAPHY = importlib.util.find_spec("cryptography") is not None


def _tokens(**changes: object) -> TokenSet:
    values: dict[str, object] = {"access_token": ACCESS, "refresh_token": REFRESH, "expires_at": time.time() + 3600,
                                 "scope": ("profiles:read", "events:write"), "obtained_at": time.time()}
    values.update(changes)
    return TokenSet(**values)  # type: ignore[arg-type]


def test_tokens_round_trip_in_a_file_only_the_owner_can_read(tmp_path: Path) -> None:
    path = tmp_path / "run" / "nested" / "tokens.json"
    store = TokenStore(path)
    assert store.load() is None and store.signature() is None and not store.exists()
    old_umask = os.umask(0o000)  # even a permissive umask gives 0600 / 0700
    try:
        store.save(_tokens())
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = store.load()
    assert loaded is not None and loaded.to_dict() == _tokens().to_dict() | {
        "expires_at": loaded.expires_at, "obtained_at": loaded.obtained_at}
    document = orjson.loads(path.read_bytes())
    assert document["format"] == "ipaas-klaviyo-tokens" and document["version"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["tokens.json"]  # no temporary file left behind
    assert store.delete() and not store.exists() and not store.delete()


def test_a_file_others_can_read_is_tightened_to_0600(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(_tokens())
    os.chmod(store.path, 0o644)
    assert store.load() is not None
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert "readable by others" in caplog.text


def test_every_save_changes_the_signature_the_provider_watches(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(_tokens())
    first = store.signature()
    store.save(_tokens(access_token="another-access-token-value"))
    assert first is not None and store.signature() != first  # a new inode each time (atomic rename)


def test_tokens_never_appear_in_reprs_or_errors(tmp_path: Path) -> None:
    tokens = _tokens()
    for text in (repr(tokens), str(tokens), f"{tokens}", repr(TokenStore(tmp_path / "t.json"))):
        assert ACCESS not in text and REFRESH not in text
    bad = {"format": "ipaas-klaviyo-tokens", "tokens": {"refresh_token": REFRESH}}
    (tmp_path / "bad.json").write_bytes(orjson.dumps(bad))
    with pytest.raises(TokenStoreError) as caught:
        TokenStore(tmp_path / "bad.json").load()
    assert REFRESH not in str(caught.value) and "authorize" in str(caught.value)
    (tmp_path / "junk.json").write_text(f"not json {ACCESS}")
    with pytest.raises(TokenStoreError) as junk:
        TokenStore(tmp_path / "junk.json").load()
    assert ACCESS not in str(junk.value) and junk.value.__suppress_context__  # no chained parse error shown


def test_token_response_parsing(tmp_path: Path) -> None:
    now = 1_800_000_000.0
    tokens = TokenSet.from_response({"access_token": ACCESS, "token_type": "Bearer", "expires_in": 3600,
                                     "refresh_token": REFRESH, "scope": "a b"}, now=now)
    assert tokens.expires_at == now + 3600 and tokens.scope == ("a", "b")
    assert not tokens.expires_within(300, now + 3299) and tokens.expires_within(300, now + 3300)
    kept = TokenSet.from_response({"access_token": "new-access"}, now=now, previous_refresh_token=REFRESH)
    assert kept.refresh_token == REFRESH and kept.expires_at is None and not kept.expires_within(1e9, now)
    with pytest.raises(ValueError) as caught:
        TokenSet.from_response({"refresh_token": REFRESH})
    assert REFRESH not in str(caught.value)


@pytest.mark.skipif(HAS_CRYPTOGRAPHY, reason="checks the message shown without the optional package")
def test_a_key_without_the_cryptography_package_is_a_clear_error(tmp_path: Path) -> None:
    key = "a-key-that-must-never-be-shown-000000000000"
    with pytest.raises(TokenStoreError) as caught:
        TokenStore(tmp_path / "tokens.json", SecretStr(key))
    assert "cryptography" in str(caught.value) and "ipaas-klaviyo[oauth-encryption]" in str(caught.value)
    assert key not in str(caught.value)
    assert TokenStore(tmp_path / "tokens.json", SecretStr("")).encrypted is False  # an empty key: no encryption


@pytest.mark.skipif(not HAS_CRYPTOGRAPHY, reason="encryption needs the optional 'cryptography' package")
def test_an_encrypted_file_holds_no_token_in_clear_and_needs_the_key(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    path = tmp_path / "tokens.json"
    store = TokenStore(path, SecretStr(key))
    assert store.encrypted
    store.save(_tokens())
    raw = path.read_bytes()
    assert ACCESS.encode() not in raw and REFRESH.encode() not in raw
    assert orjson.loads(raw)["encryption"] == "fernet"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = store.load()
    assert loaded is not None and loaded.access_token == ACCESS and loaded.refresh_token == REFRESH

    with pytest.raises(TokenStoreError, match="encrypted"):
        TokenStore(path).load()
    other = Fernet.generate_key().decode()
    with pytest.raises(TokenStoreError, match="wrong key") as wrong:
        TokenStore(path, other).load()
    assert other not in str(wrong.value) and key not in str(wrong.value)
    with pytest.raises(TokenStoreError, match="not a Fernet key") as bad:
        TokenStore(path, "too-short-passphrase")
    assert "too-short-passphrase" not in str(bad.value)

    plain = TokenStore(tmp_path / "plain.json")  # a plain file is still read with a key, and encrypted on save
    plain.save(_tokens())
    keyed = TokenStore(plain.path, key)
    tokens = keyed.load()
    assert tokens is not None
    keyed.save(tokens)
    assert ACCESS.encode() not in plain.path.read_bytes()
