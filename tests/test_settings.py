"""Settings: environment variables over the TOML file, secrets never printed, every variable documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from consumer.settings import Settings, load_settings

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
