import re

from consumer.http.redact import MASK, Redactor


def test_known_secrets_are_replaced() -> None:
    secrets = ["s3cr3t-value"]
    redactor = Redactor(lambda: secrets)
    assert redactor.scrub("key=s3cr3t-value and again s3cr3t-value") == f"key={MASK} and again {MASK}"
    secrets.append("rotated-token")  # looked up on every call
    assert "rotated-token" not in redactor.scrub("now rotated-token")


def test_secret_shaped_text_is_masked_even_when_unknown() -> None:
    redactor = Redactor()
    text = redactor.scrub(
        "Authorization: Bearer abcdefghijklmnop, Basic dXNlcjpwYXNzd29yZA==, refresh_token=zzzzzzzzzz"
    )
    assert "abcdefghijklmnop" not in text and "dXNlcjpwYXNzd29yZA==" not in text and "zzzzzzzzzz" not in text


def test_extra_patterns() -> None:
    redactor = Redactor(patterns=[re.compile(r"pk_[a-z0-9]{10}")])
    assert redactor.scrub("key pk_abcdefghij here") == f"key {MASK} here"


def test_ordinary_text_is_untouched() -> None:
    assert Redactor().scrub("409 duplicate_profile: A profile already exists.") == (
        "409 duplicate_profile: A profile already exists."
    )
