"""Making sense of response bodies: JSON error bodies, bodies that are not what the API promised (HTML pages
from proxies and CDNs), and JSON answers that do not read as what the operation returns."""

from __future__ import annotations

import html
import re
from http import HTTPStatus
from typing import Any

import orjson
from pydantic import ValidationError

_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_H1 = re.compile(rb"<h1[^>]*>(.*?)</h1>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def is_json_content_type(content_type: str | None) -> bool:
    """True for ``application/json``, ``application/vnd.api+json`` and other ``+json`` media types."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def reason_phrase(status: int) -> str:
    """The standard reason phrase of an HTTP status (``"Unknown Status"`` for one it does not know)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown Status"


def json_object(content: bytes, content_type: str | None) -> dict[str, Any] | None:
    """A body that is a JSON object (an error document), or None when it is empty, not JSON (e.g. an HTML page)
    or not an object."""
    if not content or (content_type and not is_json_content_type(content_type) and content[:1] not in b"{["):
        return None
    try:
        document = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def _clean(raw: bytes, limit: int) -> str:
    text = html.unescape(_TAGS.sub(" ", raw.decode("utf-8", "replace")))
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize_non_json(body: bytes, content_type: str | None, *, limit: int = 200) -> str:
    """A one-line description of a non-JSON body: the HTML page title (or first heading), else its start."""
    media = (content_type or "unknown content type").split(";", 1)[0].strip() or "unknown content type"
    if not body:
        return f"empty {media} body"
    for pattern in (_TITLE, _H1):
        match = pattern.search(body[:65536])
        if match:
            title = _clean(match.group(1), limit)
            if title:
                return f"{media} page: {title}"
    return f"{media} body: {_clean(body[:4096], limit)}"


def unreadable_parts(exc: ValidationError, *, limit: int = 5) -> str:
    """Which parts of an answer could not be read as its model: ``"unreadable id, attributes.email"`` (locations
    only, never values, so the text is safe in errors and logs)."""
    names = sorted({".".join(str(part) for part in error["loc"]) for error in exc.errors()})
    return "unreadable " + ", ".join(name or "body" for name in names[:limit])
