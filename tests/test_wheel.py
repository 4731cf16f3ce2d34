"""The built wheel carries its data: installed away from the checkout, it finds the topic catalog by itself.

The wheel is built offline from a copy of the sources (``pip wheel --no-build-isolation``: setuptools and wheel
come with the test extra), installed with ``--no-deps`` into a scratch venv, and run from another directory.
The dependencies come from the running venv through a ``.pth`` file, which puts them after the scratch venv's
own site-packages: the wheel's ``consumer``, ``simulators`` and ``topics`` are the ones imported, never the
checkout's (whose editable finder a ``.pth``-added directory does not activate).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from consumer.topics import TopicCatalog

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "consumer", "simulators", "topics")

pytestmark = pytest.mark.slow

LOAD_DEFAULTS = textwrap.dedent("""
    import sys
    from pathlib import Path

    import consumer
    import simulators
    import topics
    from consumer.topics import DEFAULT_CATALOG, TopicCatalog
    from simulators.klaviyo import load_spec

    site = Path(sys.argv[1]).resolve()
    for module in (consumer, simulators, topics):
        assert site in Path(module.__file__).resolve().parents, (module.__name__, module.__file__)
    assert site in DEFAULT_CATALOG.resolve().parents, DEFAULT_CATALOG
    catalog = TopicCatalog.load()
    spec = load_spec()
    assert spec is not None and site in spec.source.resolve().parents, "the vendored Klaviyo contract is missing"
    print(" ".join(sorted(catalog.topics)))
""")


def _run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=120, check=False)
    assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
    return result


def test_the_installed_wheel_finds_the_topic_catalog_and_its_data(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:  # a copy: the build leaves nothing (build/, *.egg-info) in the work tree
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(wheels), str(source)], cwd=tmp_path)
    (wheel,) = wheels.glob("ipaas_klaviyo-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
          str(wheel)], cwd=tmp_path)
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path).stdout.strip())
    dependencies = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "_ipaas_klaviyo_test_dependencies.pth").write_text("".join(f"{path}\n" for path in dependencies))

    elsewhere = tmp_path / "elsewhere"  # no checkout, no topics/ folder here
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "IPAAS_KLAVIYO_TOPICS_FILE", "IPAAS_KLAVIYO_SETTINGS_FILE",
                          "KLAVIYO_OPENAPI_SPEC")}

    helped = _run([str(venv / "bin" / "ipaas-klaviyo"), "topics", "check", "--help"], cwd=elsewhere, env=env)
    assert "{apply,check}" in helped.stdout

    loaded = _run([str(python), "-c", LOAD_DEFAULTS, str(site)], cwd=elsewhere, env=env)
    expected = TopicCatalog.load(REPO / "topics" / "topics.yaml").topics  # the checkout's (with its retry topics)
    assert loaded.stdout.split() == sorted(expected)
