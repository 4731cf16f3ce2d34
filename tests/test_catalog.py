"""The error catalog: where an entry sends a subscriber to iPaaS.com Support, a self-hosted operator gets the
setting or command that fixes it, and that setting exists."""

from __future__ import annotations

import argparse
import re

import pytest

from consumer.catalog import ENTRIES, CatalogEntry
from consumer.cli import build_parser
from consumer.settings import env_name, setting_names

SETTINGS = {name for name, _ in setting_names()}
COMMANDS = {name for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices}


def _sends_elsewhere(entry: CatalogEntry) -> bool:
    return "support@ipaas.com" in entry.action or "maintainers" in entry.action


def test_every_entry_that_sends_to_support_has_an_operator_hint() -> None:
    missing = [entry.code for entry in ENTRIES if _sends_elsewhere(entry) and not entry.operator_hint]
    assert not missing
    assert sum(1 for entry in ENTRIES if entry.operator_hint) >= 14


@pytest.mark.parametrize("entry", [entry for entry in ENTRIES if entry.operator_hint], ids=lambda entry: entry.code)
def test_a_hint_names_real_settings_and_commands(entry: CatalogEntry) -> None:
    hint = entry.operator_hint or ""
    named = set(re.findall(r"\b(?:kafka|klaviyo|ipaas|oauth|http|poller|runtime)\.[a-z_]+\b", hint))
    named |= {word for word in re.findall(r"\b[a-z_]+\b", hint) if word in ("mapping_dir", "topic_prefix")}
    commands = set(re.findall(r"`ipaas-klaviyo ([a-z-]+)", hint))
    assert named or commands, f"{entry.code}: the hint names no setting and no command"
    assert named <= SETTINGS, f"{entry.code}: {sorted(named - SETTINGS)} are not settings"
    assert commands <= COMMANDS, f"{entry.code}: {sorted(commands - COMMANDS)} are not commands"
    for variable in re.findall(r"\bIPAAS_KLAVIYO_[A-Z_]+\b", hint):
        assert variable in {env_name(name) for name in SETTINGS}, f"{entry.code}: {variable}"
