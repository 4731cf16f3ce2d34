"""What ``dlq`` prints: a dead letter in full, the table, and the replay progress bar (on a terminal only)."""

from __future__ import annotations

import io

from consumer.catalog import KLAVIYO_CONNECTION_ERROR, KLAVIYO_REJECTED_REQUEST
from consumer.failures import headers as dl
from consumer.failures.errorlog import LoggedError
from consumer.failures.output import TextProgress, format_error, format_letter, format_table
from consumer.failures.replay import ReplayProgress
from tests.failures.helpers import FULL_CONTEXT as FULL
from tests.failures.helpers import letter


def test_a_letter_is_shown_in_full_with_what_it_means_and_what_to_do():
    shown = format_letter(letter(FULL))
    assert "what it means  " + KLAVIYO_REJECTED_REQUEST.meaning in shown
    assert "what to do     " + KLAVIYO_REJECTED_REQUEST.action in shown and "value (UTF-8 text):" in shown
    assert f"self-hosted    {KLAVIYO_REJECTED_REQUEST.operator_hint}" in shown
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


def test_an_error_log_record_written_before_the_meaning_shows_the_catalog_s():
    """Records written before the error log carried ``meaning`` (and the operator's hint) take both from the
    catalog by their code."""
    old = {"time": "2026-05-01T10:00:00.000Z", "severity": "error", "code": KLAVIYO_CONNECTION_ERROR.code,
           "title": KLAVIYO_CONNECTION_ERROR.title, "flow": "all", "message": "An error occurred while contacting "
           "Klaviyo", "what_to_do": KLAVIYO_CONNECTION_ERROR.action}
    shown = format_error(LoggedError(0, 1, "customer:c-1", old))
    assert f"meaning      {KLAVIYO_CONNECTION_ERROR.meaning}" in shown
    assert f"self-hosted  {KLAVIYO_CONNECTION_ERROR.operator_hint}" in shown
