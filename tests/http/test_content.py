import pytest

from consumer.http.content import is_json_content_type, summarize_non_json


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("application/json", True),
        ("application/vnd.api+json; charset=utf-8", True),
        ("text/html; charset=UTF-8", False),
        (None, False),
        ("", False),
    ],
)
def test_json_content_types(value: str | None, expected: bool) -> None:
    assert is_json_content_type(value) is expected


def test_html_page_is_summarised_by_its_title() -> None:
    page = b"<html><head><title>502 Bad Gateway</title></head><body><h1>nope</h1></body></html>"
    assert summarize_non_json(page, "text/html; charset=UTF-8") == "text/html page: 502 Bad Gateway"


def test_heading_when_no_title_and_entities_are_decoded() -> None:
    assert summarize_non_json(b"<body><h1>Access &amp; denied</h1></body>", "text/html") == (
        "text/html page: Access & denied"
    )


def test_plain_text_is_cut_to_the_limit() -> None:
    summary = summarize_non_json(b"x" * 1000, "text/plain", limit=50)
    assert summary.startswith("text/plain body: xxx") and len(summary) <= len("text/plain body: ") + 50


def test_empty_body() -> None:
    assert summarize_non_json(b"", None) == "empty unknown content type body"
