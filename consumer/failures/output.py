"""What ``dlq`` and ``errors`` print: tables, one record in full, JSON lines, and the replay progress bar."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from consumer.catalog import entry_for_code
from consumer.failures.deadletters import DeadLetter, key_text
from consumer.failures.errorlog import LoggedError
from consumer.timefmt import format_time

if TYPE_CHECKING:
    from consumer.failures.replay import ReplayProgress


def to_json_line(document: Mapping[str, Any]) -> str:
    return orjson.dumps(document).decode()


def _clip(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell, the last one left as it is."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]).rstrip()
                     for row in rows)


# --- dead letters --------------------------------------------------------------------------------------------------
def format_table(letters: Sequence[DeadLetter]) -> str:
    """One line per dead letter."""
    rows = [("DEAD LETTER", "ORIGINAL", "KEY", "FLOW", "CODE", "ATT", "LAST FAILURE", "MESSAGE")]
    for letter in letters:
        last = letter.last_failure
        rows.append((
            f"{letter.topic}:{letter.partition}:{letter.offset}",
            f"{letter.original_topic}:{letter.original_partition}:{letter.original_offset}",
            _clip(key_text(letter.key), 24), letter.flow, letter.code,
            str(letter.attempts) + (f"+r{letter.replay_count}" if letter.replay_count else ""),
            format_time(last) if last else "-", _clip(letter.message, 80),
        ))
    return _table(rows)


def format_letter(letter: DeadLetter) -> str:
    """One dead letter in full: where it came from, the failure, what it means and what to do, the history,
    headers and value."""
    d = letter.to_dict(full=True)
    original = d["original"]
    lines = [
        f"dead letter    {d['ref']}  (dead-lettered {d['timestamp']})",
        f"original       {original['topic']} partition {original['partition']} offset {original['offset']}",
        f"key            {d['key']}",
        f"flow           {d['flow']}",
        f"error code     {d['code']} ({d['error_class'] or '-'}"
        + (f", HTTP {d['http_status']}" if d["http_status"] else "") + ")",
        f"message        {d['message']}",
        f"attempts       {d['attempts']}   replays: {d['replay_count']}",
        f"first failure  {d['first_failure']}",
        f"last failure   {d['last_failure']}",
        f"exception      {d['exception']}",
        f"consumer group {d['consumer_group']}",
        f"what it means  {d['meaning']}",
        f"what to do     {d['what_to_do']}",
    ]
    if d["operator_hint"]:
        lines.append(f"self-hosted    {d['operator_hint']}")
    if d["history"]:
        lines.append("failure history (earlier replays, oldest first):")
        for item in d["history"]:
            lines.append(f"  - {item.get('last_failure')}  {item.get('code')}  flow {item.get('flow')}  "
                         f"attempts {item.get('attempts')}: {item.get('message')}")
    lines.append("headers:")
    lines.extend(f"  {name}: {value}" for name, value in d["headers"].items())
    label = {"utf-8": "value (UTF-8 text):", "base64": "value (not UTF-8; base64):", "null": "value: null"}
    lines.append(label[d["value_encoding"]])
    if d["value"] is not None:
        lines.append(d["value"])
    return "\n".join(lines)


# --- the error log -------------------------------------------------------------------------------------------------
def format_error_table(entries: Sequence[LoggedError]) -> str:
    """One line per error-log record."""
    rows = [("TIME", "SEVERITY", "FLOW", "CODE", "TRANSFER", "SOURCE", "MESSAGE")]
    for entry in entries:
        record = entry.record
        source = record.get("source")
        rows.append((
            str(record.get("time", "")), str(record.get("severity", "")), str(record.get("flow", "")),
            str(record.get("code", "")), _clip(entry.transfer, 40),
            f"{source['topic']}:{source['partition']}:{source['offset']}" if isinstance(source, dict) else "-",
            _clip(record.get("message"), 100),
        ))
    return _table(rows)


def format_error(entry: LoggedError) -> str:
    """One error-log record in full (detail, cause, what it means, what to do, the self-hosted operator's fix)."""
    record = entry.record
    lines = [f"{record.get('time')}  {str(record.get('severity', '')).upper()}  {record.get('code')} "
             f"({record.get('title')})",
             f"  flow         {record.get('flow')}",
             f"  transfer     {entry.transfer}"]
    source = record.get("source")
    if isinstance(source, dict):
        lines.append(f"  source       {source['topic']} partition {source['partition']} offset {source['offset']}"
                     + ("  (dead-lettered)" if record.get("dead_lettered") else ""))
    lines.append(f"  message      {record.get('message')}")
    for label, name in (("detail", "detail"), ("HTTP status", "http_status"), ("Klaviyo code", "klaviyo_error_code"),
                        ("attempts", "attempts")):
        if record.get(name) not in (None, ""):
            lines.append(f"  {label:<12} {record[name]}")
    cause = record.get("cause")
    if isinstance(cause, dict):
        lines.append(f"  caused by    {cause.get('code')}: {cause.get('message')}")
    # records written before the error log carried the meaning (or a hint) take it from the catalog
    catalog = entry_for_code(str(record.get("code", "")))
    lines.append(f"  meaning      {record.get('meaning') or catalog.meaning}")
    lines.append(f"  what to do   {record.get('what_to_do') or catalog.action}")
    hint = record.get("operator_hint") or catalog.operator_hint
    if hint:
        lines.append(f"  self-hosted  {hint}")
    return "\n".join(lines)


# --- replay progress -----------------------------------------------------------------------------------------------
class TextProgress:
    """A one-line progress bar on a terminal (nothing when the stream is not a TTY)."""

    def __init__(self, stream: TextIO | None = None, *, label: str = "replay", every_s: float = 0.1) -> None:
        self._stream = stream or sys.stderr
        self._enabled = self._stream.isatty()
        self._label = label
        self._every_s = every_s
        self._last = 0.0
        self._started = time.monotonic()
        self._drawn = False

    def __call__(self, progress: ReplayProgress, *, force: bool = False) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self._every_s:
            return
        self._last = now
        share = progress.scanned / progress.total if progress.total else 1.0
        filled = int(share * 30)
        rate = progress.replayed / max(now - self._started, 1e-6)
        line = (f"\r{self._label} [{'#' * filled}{'.' * (30 - filled)}] {share:6.1%}  replayed {progress.replayed}"
                f"  failed {progress.failed}  skipped {progress.skipped}  {rate:.0f}/s")
        self._stream.write(line)
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
