"""The token store: the OAuth tokens in a file only its owner can read (0600), optionally encrypted.

The file is JSON: ``{"format": "ipaas-klaviyo-tokens", "version": 1, "tokens": {...}}``. With a key
(``oauth.token_key``, i.e. ``IPAAS_KLAVIYO_OAUTH__TOKEN_KEY``) ``tokens`` is a Fernet token instead (AES-128-CBC +
HMAC-SHA256, from the optional ``cryptography`` package). Writes are atomic (temporary file, fsync, rename), so a
reader (the running service) never sees half a file. Nothing here ever puts a token or the key into a message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets as _secrets
import stat
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

log = logging.getLogger("consumer.oauth.store")

FORMAT = "ipaas-klaviyo-tokens"
VERSION = 1
FILE_MODE = 0o600
DIR_MODE = 0o700
KEY_HELP = (
    "make one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
)


class TokenStoreError(ValueError):
    """The token file cannot be read or written (the message names the file and the fix, never a secret)."""


@dataclass(frozen=True, slots=True, repr=False)
class TokenSet:
    """An access token, its refresh token and when the access token expires (epoch seconds; None: unknown)."""

    access_token: str
    refresh_token: str | None
    expires_at: float | None
    scope: tuple[str, ...] = ()
    token_type: str = "Bearer"
    obtained_at: float = 0.0

    @classmethod
    def from_response(cls, document: dict[str, Any], *, now: float | None = None,
                      previous_refresh_token: str | None = None) -> TokenSet:
        """A token endpoint reply; a reply without a refresh token keeps ``previous_refresh_token``.

        Raises ``ValueError`` (without the document's values) when the reply carries no access token.
        """
        now = time.time() if now is None else now
        access = document.get("access_token")
        if not isinstance(access, str) or not access:
            raise ValueError("the token response carried no access_token")
        refresh = document.get("refresh_token")
        if not isinstance(refresh, str) or not refresh:
            refresh = previous_refresh_token
        expires_in = document.get("expires_in")
        expires_at = now + float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else None
        scope = document.get("scope")
        token_type = document.get("token_type")
        return cls(
            access_token=access,
            refresh_token=refresh,
            expires_at=expires_at,
            scope=tuple(scope.split()) if isinstance(scope, str) else (),
            token_type=token_type if isinstance(token_type, str) and token_type else "Bearer",
            obtained_at=now,
        )

    def expires_within(self, margin_s: float, now: float | None = None) -> bool:
        """True when the access token expires in less than ``margin_s`` seconds (never, when unknown)."""
        if self.expires_at is None:
            return False
        return self.expires_at - margin_s <= (time.time() if now is None else now)

    def with_refresh_token(self, refresh_token: str | None) -> TokenSet:
        return replace(self, refresh_token=refresh_token)

    def secrets(self) -> tuple[str, ...]:
        return tuple(t for t in (self.access_token, self.refresh_token) if t)

    def to_dict(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at,
            "scope": " ".join(self.scope),
            "token_type": self.token_type,
            "obtained_at": self.obtained_at,
        }

    @classmethod
    def from_dict(cls, data: Any) -> TokenSet:
        if not isinstance(data, dict) or not isinstance(data.get("access_token"), str) or not data["access_token"]:
            raise ValueError("no access_token")
        refresh = data.get("refresh_token")
        expires_at = data.get("expires_at")
        scope = data.get("scope")
        return cls(
            access_token=data["access_token"],
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            expires_at=float(expires_at) if isinstance(expires_at, int | float) else None,
            scope=tuple(scope.split()) if isinstance(scope, str) else (),
            token_type=str(data.get("token_type") or "Bearer"),
            obtained_at=float(data.get("obtained_at") or 0.0),
        )

    def __repr__(self) -> str:
        return (f"TokenSet(access_token='**********', refresh_token={'**********' if self.refresh_token else None!r}, "
                f"expires_at={self.expires_at!r}, scope={self.scope!r})")

    __str__ = __repr__


Signature = tuple[int, int, int]
"""What tells a changed token file: (mtime in ns, size, inode)."""


class _Cipher:
    """Fernet from the optional ``cryptography`` package (``pip install 'ipaas-klaviyo[oauth-encryption]'``)."""

    def __init__(self, key: SecretStr) -> None:
        try:
            from cryptography.fernet import Fernet
        except ImportError:
            raise TokenStoreError(
                "oauth.token_key is set, but encrypting the token file needs the 'cryptography' package: "
                "pip install 'ipaas-klaviyo[oauth-encryption]'"
            ) from None
        try:
            self._fernet = Fernet(key.get_secret_value().encode())
        except (ValueError, TypeError):
            raise TokenStoreError(
                f"oauth.token_key is not a Fernet key (32 url-safe base64-encoded bytes); {KEY_HELP}"
            ) from None

    def encrypt(self, data: bytes) -> str:
        return str(self._fernet.encrypt(data).decode())

    def decrypt(self, token: str) -> bytes:
        from cryptography.fernet import InvalidToken

        try:
            return bytes(self._fernet.decrypt(token.encode()))
        except (InvalidToken, ValueError, TypeError):
            raise TokenStoreError("the token file cannot be decrypted with oauth.token_key (wrong key?)") from None


class TokenStore:
    """Reads and writes the token file; ``key`` encrypts it (needs the ``cryptography`` package)."""

    def __init__(self, path: Path | str, key: SecretStr | str | None = None) -> None:
        self.path = Path(path)
        if isinstance(key, str):
            key = SecretStr(key)
        self._key = key if key is not None and key.get_secret_value() else None
        self._cipher: _Cipher | None = None
        if self._key is not None:
            self._cipher = _Cipher(self._key)  # fail at once on a bad key or a missing package

    @property
    def encrypted(self) -> bool:
        return self._cipher is not None

    def exists(self) -> bool:
        return self.path.is_file()

    def signature(self) -> Signature | None:
        """The file's (mtime_ns, size, inode), or None when there is no file."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return info.st_mtime_ns, info.st_size, info.st_ino

    def load(self) -> TokenSet | None:
        """The stored tokens, or None when there is no file. Tightens a file others can read to 0600."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TokenStoreError(f"cannot read the token file {self.path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if stat.S_IMODE(info.st_mode) & 0o077:
                log.warning("the token file was readable by others; its mode is now 0600",
                            extra={"path": str(self.path), "mode": oct(stat.S_IMODE(info.st_mode))})
                with contextlib.suppress(OSError):
                    os.fchmod(handle.fileno(), FILE_MODE)
            raw = handle.read()
        return self._decode(raw)

    def _decode(self, raw: bytes) -> TokenSet:
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise TokenStoreError(f"the token file {self.path} is not valid JSON; run `ipaas-klaviyo authorize`") \
                from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise TokenStoreError(f"{self.path} is not an ipaas-klaviyo token file")
        payload = document.get("tokens")
        if document.get("encryption") == "fernet":
            if self._cipher is None:
                raise TokenStoreError(
                    f"the token file {self.path} is encrypted: set IPAAS_KLAVIYO_OAUTH__TOKEN_KEY (oauth.token_key)")
            if not isinstance(payload, str):
                raise TokenStoreError(f"the token file {self.path} is damaged; run `ipaas-klaviyo authorize`")
            try:
                payload = orjson.loads(self._cipher.decrypt(payload))
            except orjson.JSONDecodeError:
                raise TokenStoreError(f"the token file {self.path} is damaged; run `ipaas-klaviyo authorize`") \
                    from None
        try:
            return TokenSet.from_dict(payload)
        except ValueError:
            raise TokenStoreError(f"the token file {self.path} holds no access token; run `ipaas-klaviyo authorize`") \
                from None

    def save(self, tokens: TokenSet) -> None:
        """Write the tokens atomically, mode 0600 (the directory is created 0700 when missing)."""
        body = orjson.dumps(tokens.to_dict())
        document: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        if self._cipher is not None:
            document["encryption"] = "fernet"
            document["tokens"] = self._cipher.encrypt(body)
        else:
            document["tokens"] = orjson.loads(body)
        data = orjson.dumps(document, option=orjson.OPT_INDENT_2)
        directory = self.path.parent
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        temporary = directory / f".{self.path.name}.{_secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
            try:
                os.fchmod(fd, FILE_MODE)
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise TokenStoreError(f"cannot write the token file {self.path}: {exc.strerror}") from None
        _fsync_directory(directory)

    def delete(self) -> bool:
        """Remove the token file; False when there was none."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        _fsync_directory(self.path.parent)
        return True

    def __repr__(self) -> str:
        return f"TokenStore(path={str(self.path)!r}, encrypted={self.encrypted})"


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
