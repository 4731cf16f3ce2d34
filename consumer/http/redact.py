"""Scrubbing secrets (keys, tokens, Authorization values) out of text before it reaches a log or exception."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

MASK = "***"
_GENERIC = (
    re.compile(r"(?i)\b(authorization\s*[:=]\s*)([^\s,;'\"]+(?:\s+[^\s,;'\"]+)?)"),
    re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._~+/=-]{8,})"),
    re.compile(r"(?i)\b(basic\s+)([A-Za-z0-9+/=]{8,})"),
    re.compile(r"(?i)\b((?:access|refresh)_token[\"']?\s*[:=]\s*[\"']?)([A-Za-z0-9._~+/=-]+)"),
    re.compile(r"(?i)\b(klaviyo-api-key\s+)([A-Za-z0-9._~+/=-]{6,})"),
    re.compile(r"\bpk_[A-Za-z0-9]{6,}"),
    re.compile(r"(?i)\b((?:client_secret|api_key|api_token|password|code_verifier)[\"']?\s*[:=]\s*[\"']?)([^\s\"'&,}]+)"),
)


def _mask(match: re.Match[str]) -> str:
    """Keep a pattern's first group (the label, e.g. ``Bearer ``) when it has two; mask the rest."""
    return (match.group(1) if (match.re.groups or 0) >= 2 else "") + MASK


class Redactor:
    """Replaces known secret values and secret-looking patterns with ``***``.

    ``secrets`` is called on every ``scrub`` so a credential that changes (a refreshed OAuth token) is covered.
    """

    def __init__(
        self,
        secrets: Callable[[], Iterable[str]] | None = None,
        *,
        patterns: Iterable[re.Pattern[str]] = (),
    ) -> None:
        self._secrets = secrets
        self._patterns = (*_GENERIC, *patterns)

    def scrub(self, text: str) -> str:
        """``text`` without any secret."""
        if self._secrets is not None:
            for secret in self._secrets():
                if secret and len(secret) >= 4:
                    text = text.replace(secret, MASK)
        for pattern in self._patterns:
            text = pattern.sub(_mask, text)
        return text


_DEFAULT = Redactor()


def redact(text: str) -> str:
    """``text`` with secret-looking values (keys, tokens, passwords, Authorization values) masked."""
    return _DEFAULT.scrub(text)
