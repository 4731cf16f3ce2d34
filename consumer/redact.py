"""Scrub secrets from text that may reach a log line, a dead letter or an error message."""

from __future__ import annotations

import re

_PATTERNS = (
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?:bearer|basic|klaviyo-api-key)?\s*[^\s\"',}]+"),
    re.compile(r"(?i)\b(bearer|basic|klaviyo-api-key)\s+[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"\bpk_[A-Za-z0-9]{6,}"),
    re.compile(
        r"(?i)((?:access|refresh)_token|client_secret|api_key|password|code_verifier)"
        r"([\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]+"
    ),
)
MASK = "[REDACTED]"


def redact(text: str) -> str:
    """The text with API keys, bearer tokens, client secrets and passwords masked."""
    text = _PATTERNS[0].sub(lambda m: m.group(1) + MASK, text)
    text = _PATTERNS[1].sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _PATTERNS[2].sub(MASK, text)
    return _PATTERNS[3].sub(lambda m: m.group(1) + m.group(2) + MASK, text)
