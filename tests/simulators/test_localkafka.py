"""The local broker's pid file: `kafka start` then `demo` neither overwrites nor deletes the recorded broker's
``broker.pid``, and a broker started for one run (the demo's own) is stopped with nothing left running."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.cli import main as cli_main
from consumer.settings import load_settings
from simulators import localkafka
from simulators.demo import run_demo, sample_changes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def recorded_elsewhere(tmp_path: Path, kafka_bootstrap: str) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A Kafka home whose ``broker.pid`` records the test broker's port under the pid of a process of ours, as if
    `ipaas-klaviyo kafka start` had started it: a stop would end that process, a rewrite would change the file."""
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    port = int(kafka_bootstrap.rsplit(":", 1)[1])
    (tmp_path / "broker.pid").write_text(f"{owner.pid} {port}\n")
    try:
        yield tmp_path, owner
    finally:
        owner.kill()
        owner.wait()


async def test_the_demo_uses_the_recorded_broker_and_leaves_it_running(
    recorded_elsewhere: tuple[Path, subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home, owner = recorded_elsewhere
    before = (home / "broker.pid").read_text()
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("IPAAS_KLAVIYO_KAFKA_HOME", str(home))

    assert await run_demo(load_settings()) == 0

    assert f"all {len(sample_changes())} sample changes handled: True" in capsys.readouterr().out
    assert (home / "broker.pid").read_text() == before
    assert owner.poll() is None, "the demo stopped the broker `kafka start` had started"
    assert not (home / "run").exists(), "the demo started a broker of its own"

    assert await asyncio.to_thread(cli_main, ["kafka", "start"]) == 0  # a second start points at the running one
    out, err = capsys.readouterr()
    assert out.strip() == f"127.0.0.1:{before.split()[1]}" and f"pid {owner.pid}" in err
    assert (home / "broker.pid").read_text() == before and owner.poll() is None
    with pytest.raises(localkafka.BrokerError, match="already runs"):
        localkafka.start(home=home)


def test_a_broker_for_one_run_keeps_off_the_record_and_stops_entirely(
    recorded_elsewhere: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    home, owner = recorded_elsewhere
    before = (home / "broker.pid").read_text()
    (home / "libs").symlink_to(localkafka.install(), target_is_directory=True)  # the jars, not resolved again

    broker = localkafka.start(home=home, record=False)
    try:
        assert (home / "broker.pid").read_text() == before
        assert (home / "run" / str(broker.port) / "broker.pid").read_text().split() == [str(broker.pid),
                                                                                        str(broker.port)]
        assert localkafka.recorded(home) == localkafka.LocalBroker(home, int(before.split()[1]), owner.pid)
    finally:
        assert localkafka.stop(broker)

    assert not _alive(broker.pid), "the JVM outlived stop()"
    assert (home / "broker.pid").read_text() == before and owner.poll() is None
    assert not (home / "run" / str(broker.port) / "broker.pid").exists()
