"""Settings: environment variables over the TOML file, secrets never printed, every variable documented."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from consumer.app import ConfigurationError, ipaas_client, klaviyo_auth
from consumer.settings import (
    InvalidSettings,
    IpaasSettings,
    KlaviyoSettings,
    Settings,
    load_settings,
    setting_names,
    setting_sources,
)

README = Path(__file__).resolve().parents[1] / "README.md"


def _variables(model: type[BaseModel], prefix: str = "IPAAS_KLAVIYO_") -> list[str]:
    names: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += _variables(annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def test_every_setting_is_in_the_readme_configuration_table():
    text = README.read_text()
    missing = [name for name in _variables(Settings) if f"`{name}`" not in text]
    assert not missing


def test_environment_wins_over_the_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    file = tmp_path / "settings.toml"
    file.write_text('topic_prefix = "file."\n[kafka]\nbootstrap_servers = "file:9092"\ngroup_id = "from-file"\n')
    monkeypatch.setenv("IPAAS_KLAVIYO_SETTINGS_FILE", str(file))
    monkeypatch.setenv("IPAAS_KLAVIYO_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "env:9092"
    assert settings.kafka.group_id == "from-file"
    assert settings.topic_prefix == "file."


def test_secrets_never_print(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("IPAAS_KLAVIYO_KLAVIYO__API_KEY", "pk_supersecret123456")
    monkeypatch.setenv("IPAAS_KLAVIYO_OAUTH__CLIENT_SECRET", "client-secret-value")
    monkeypatch.setenv("IPAAS_KLAVIYO_KAFKA__SASL_PASSWORD", "kafka-password-value")
    settings = load_settings()
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    for secret in ("pk_supersecret123456", "client-secret-value", "kafka-password-value"):
        assert secret not in shown
    assert settings.klaviyo.api_key is not None
    assert settings.klaviyo.api_key.get_secret_value() == "pk_supersecret123456"


@pytest.mark.parametrize("blank", ["", "   "])
def test_an_empty_api_key_or_token_counts_as_missing(clean_env: pytest.MonkeyPatch, tmp_path: Path, blank: str):
    clean_env.setenv("IPAAS_KLAVIYO_KLAVIYO__API_KEY", blank)
    clean_env.setenv("IPAAS_KLAVIYO_IPAAS__API_TOKEN", blank)
    settings = load_settings()
    assert settings.klaviyo.api_key is None and settings.ipaas.api_token is None
    assert ipaas_client(settings) is None
    (tmp_path / "ipaas-klaviyo.toml").write_text(f'[klaviyo]\napi_key = "{blank}"\n')
    clean_env.delenv("IPAAS_KLAVIYO_KLAVIYO__API_KEY")
    assert load_settings().klaviyo.api_key is None
    with pytest.raises(ConfigurationError, match="No Klaviyo credential"):
        klaviyo_auth(settings)


# --- strict loading ------------------------------------------------------------------------------------------------
@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No IPAAS_KLAVIYO_* variable, and a working directory without a settings file."""
    for name in list(os.environ):
        if name.upper().startswith("IPAAS_KLAVIYO_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def _problems(**variables: str) -> list[str]:
    with pytest.raises(InvalidSettings) as raised, pytest.MonkeyPatch.context() as patch:
        for name, value in variables.items():
            patch.setenv(name, value)
        load_settings()
    return raised.value.problems


def test_an_unknown_variable_is_refused_with_the_nearest_name(clean_env: pytest.MonkeyPatch):
    assert _problems(IPAAS_KLAVIYO_KAFKA__BOOTSTRAP_SERVER="b:9092", IPAAS_KLAVIYO_TOPICPREFIX="x.") == [
        "IPAAS_KLAVIYO_KAFKA__BOOTSTRAP_SERVER is not a setting; did you mean IPAAS_KLAVIYO_KAFKA__BOOTSTRAP_SERVERS?",
        "IPAAS_KLAVIYO_TOPICPREFIX is not a setting; did you mean IPAAS_KLAVIYO_TOPIC_PREFIX?",
    ]
    (problem,) = _problems(IPAAS_KLAVIYO_ZZZ="1")
    assert problem.startswith("IPAAS_KLAVIYO_ZZZ is not a setting; remove it")


def test_the_variables_of_the_tooling_are_not_settings_but_allowed(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("IPAAS_KLAVIYO_KAFKA_HOME", "/somewhere")
    clean_env.setenv("IPAAS_KLAVIYO_METRICS_TARGET", "127.0.0.1:9400")
    assert load_settings().kafka.bootstrap_servers == "127.0.0.1:9092"


def test_an_unknown_key_in_the_file_is_refused_with_its_line(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    (tmp_path / "ipaas-klaviyo.toml").write_text(
        'topic_prefix = "p."\n\n[kafka]\nbootstrap_server = "b:9092"\n[klaviyo]\nbootstrap_servers = "b"\n')
    assert _problems() == [
        "ipaas-klaviyo.toml line 4: unknown setting kafka.bootstrap_server; did you mean kafka.bootstrap_servers?",
        "ipaas-klaviyo.toml line 6: unknown setting klaviyo.bootstrap_servers; did you mean kafka.bootstrap_servers?",
    ]


def test_a_named_settings_file_must_exist(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    (problem,) = _problems(IPAAS_KLAVIYO_SETTINGS_FILE=str(tmp_path / "missing.toml"))
    assert problem.startswith(f"IPAAS_KLAVIYO_SETTINGS_FILE names {tmp_path / 'missing.toml'}, which does not exist")


def test_malformed_toml_names_the_file_and_line(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    (tmp_path / "s.toml").write_text('topic_prefix = "p."\n[kafka]\nbootstrap_servers = "b:9092\n')
    (problem,) = _problems(IPAAS_KLAVIYO_SETTINGS_FILE=str(tmp_path / "s.toml"))
    assert problem.startswith(f"{tmp_path / 's.toml'} line 3, column ") and "not valid TOML" in problem


def test_an_invalid_value_names_the_setting_where_it_was_set_and_the_problem(
        clean_env: pytest.MonkeyPatch, tmp_path: Path):
    (tmp_path / "ipaas-klaviyo.toml").write_text('[runtime]\nmax_in_flight = 0\n')
    (from_file,) = _problems()
    assert from_file == ("setting runtime.max_in_flight (ipaas-klaviyo.toml line 2): Input should be greater than "
                         "or equal to 1 (got 0)")
    (from_env,) = _problems(IPAAS_KLAVIYO_RUNTIME__MAX_IN_FLIGHT="-3")
    assert from_env.startswith("setting runtime.max_in_flight (IPAAS_KLAVIYO_RUNTIME__MAX_IN_FLIGHT): ")


def test_an_invalid_secret_is_named_but_never_shown(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    (tmp_path / "ipaas-klaviyo.toml").write_text('[kafka]\nsasl_password = ["hunter2-secret"]\n')
    (problem,) = _problems()
    assert problem.startswith("setting kafka.sasl_password (ipaas-klaviyo.toml line 2): ")
    assert "hunter2-secret" not in problem


@pytest.mark.parametrize("url", ["https://a.klaviyo.com", "http://127.0.0.1:8080", "https://proxy.example/klaviyo/"])
def test_a_base_url_is_accepted(url: str):
    assert KlaviyoSettings(base_url=url).base_url == url
    assert IpaasSettings(base_url=url).base_url == url


@pytest.mark.parametrize(("url", "problem"), [
    ("a.klaviyo.com", "needs an http:// or https:// scheme"),
    ("ftp://a.klaviyo.com", "needs an http:// or https:// scheme"),
    ("https://", "has no host"),
    ("https://a.klaviyo.com/api", "has /api in its path, which the client adds itself: use https://a.klaviyo.com"),
    ("https://a.klaviyo.com/api/", "has /api in its path"),
    ("https://a.klaviyo.com/?company_id=x", "must not carry a query or fragment"),
    ("https://a.klaviyo.com:port", "is not a URL"),
])
def test_a_base_url_is_refused_with_the_reason(url: str, problem: str):
    for model in (KlaviyoSettings, IpaasSettings):
        with pytest.raises(ValidationError, match=re.escape(problem)):
            model(base_url=url)


def test_config_show_masks_secrets_and_says_where_each_value_comes_from(clean_env: pytest.MonkeyPatch,
                                                                        tmp_path: Path):
    (tmp_path / "ipaas-klaviyo.toml").write_text('topic_prefix = "file."\n[kafka]\nsasl_password = "pw-secret"\n')
    clean_env.setenv("IPAAS_KLAVIYO_KLAVIYO__API_KEY", "pk_supersecret123456")
    shown = {name: (value, source) for name, value, source in setting_sources(load_settings())}
    assert shown["klaviyo.api_key"] == ("********", "IPAAS_KLAVIYO_KLAVIYO__API_KEY")
    assert shown["kafka.sasl_password"] == ("********", "ipaas-klaviyo.toml")
    assert shown["oauth.client_secret"] == ("(not set)", "default")
    assert shown["topic_prefix"] == ("file.", "ipaas-klaviyo.toml")
    assert shown["kafka.bootstrap_servers"] == ("127.0.0.1:9092", "default")
    assert set(shown) == {name for name, table in setting_names() if not table}
    assert not any("secret" in value for value, _ in shown.values())
