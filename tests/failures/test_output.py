"""What ``dlq`` prints: a dead letter in full, the table, and the replay progress bar (on a terminal only)."""

from __future__ import annotations

import io

from consumer.catalog import KLAVIYO_REJECTED_REQUEST
from consumer.failures import headers as dl
from consumer.failures.output import TextProgress, format_letter, format_table
from consumer.failures.replay import ReplayProgress
from tests.failures.helpers import FULL_CONTEXT as FULL
from tests.failures.helpers import letter


def test_a_letter_is_shown_in_full_with_what_to_do():
    shown = format_letter(letter(FULL))
    assert "what to do     " + KLAVIYO_REJECTED_REQUEST.action in shown and "value (UTF-8 text):" in shown
    assert "failure history (earlier replays, oldest first):" in shown and "  trace: t-1" in shown
    binary = format_letter(letter({dl.ERROR_CODE: "POISON_PILL_NOT_UTF8"}, value=b"\xff\x00"))
    assert "value (not UTF-8; base64):\n/wA=" in binary
    assert "The record was set aside on the dead-letter topic" in binary  # RECORD_NOT_READABLE's action


def test_the_table_has_one_line_per_letter():
    header, row = format_table([letter(FULL)]).splitlines()
    assert header.split() == ["DEAD", "LETTER", "ORIGINAL", "KEY", "FLOW", "CODE", "ATT", "LAST", "FAILURE",
                              "MESSAGE"]
    assert row.split() == ["t.dlt:3:42", "src:3:17", "c-1", "all", KLAVIYO_REJECTED_REQUEST.code, "3+r1",
                           "2026-05-01T10:00:02.000Z", "boom"]


def test_the_progress_bar_draws_on_a_terminal_only():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        bar = TextProgress(stream, every_s=0)
        bar(ReplayProgress(scanned=50, total=100, replayed=40, committed=0, failed=0, skipped=1))
        bar.close()
    assert "50.0%" in terminal.getvalue() and "replayed 40" in terminal.getvalue()
    assert pipe.getvalue() == ""
