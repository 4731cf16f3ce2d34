"""The project's layout rules: the service never needs the development tooling, and nothing reads outside the repo.

- ``consumer`` never imports ``simulators`` (the development tooling) except lazily, inside the development
  commands of ``consumer.cli``: checked in the source and by importing the run path with ``simulators`` blocked;
- where ``simulators`` is absent, the development commands say so in one line and exit 2;
- no tracked source, config or doc names the reference folder beside the repository (only the vendoring script's
  default argument does: it is read when refreshing the vendored contract, never at run or test time).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A finder ahead of every other that refuses ``simulators`` (as if it were not installed) and records each try.
BLOCK_DEV_TOOLING = textwrap.dedent("""
    import sys

    class BlockDevTooling:
        attempts = []

        def find_spec(self, name, path=None, target=None):
            if name == "simulators" or name.startswith("simulators."):
                self.attempts.append(name)
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None

    BLOCKER = BlockDevTooling()
    sys.meta_path.insert(0, BLOCKER)
    for loaded in [m for m in sys.modules if m == "simulators" or m.startswith("simulators.")]:
        del sys.modules[loaded]
""")

RUN_PATH = BLOCK_DEV_TOOLING + textwrap.dedent("""
    import importlib
    import pkgutil

    import consumer
    import consumer.app
    import consumer.cli
    import consumer.flows
    import consumer.routing

    flows = [info.name for info in pkgutil.walk_packages(consumer.flows.__path__, "consumer.flows.")]
    for name in flows:
        importlib.import_module(name)
    every = [info.name for info in pkgutil.walk_packages(consumer.__path__, "consumer.")]
    for name in every:
        importlib.import_module(name)

    parser = consumer.cli.build_parser()
    for argv in (["run"], ["topics", "check"], ["simulate", "klaviyo"], ["kafka", "status"], ["demo"]):
        parser.parse_args(argv)
    parser.format_help()

    assert not BLOCKER.attempts, BLOCKER.attempts
    assert not [m for m in sys.modules if m.split(".")[0] == "simulators"]
    print(f"ok: {len(flows)} flow modules, {len(every)} consumer modules")
""")


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO, check=False)


def test_the_run_path_imports_without_the_development_tooling() -> None:
    result = _python(RUN_PATH)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: "), result.stdout


@pytest.mark.parametrize("argv", [["simulate", "klaviyo"], ["simulate", "ipaas"], ["kafka", "status"], ["demo"]])
def test_development_commands_say_the_tooling_is_missing_and_exit_2(argv: list[str], tmp_path: Path) -> None:
    code = BLOCK_DEV_TOOLING + "import consumer.cli\nraise SystemExit(consumer.cli.main(sys.argv[1:]))\n"
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, check=False)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"ipaas-klaviyo {argv[0]}" in lines[0] and "development tooling" in lines[0]


def _imports_of_simulators(tree: ast.AST) -> list[tuple[int, str | None]]:
    """``(line, enclosing function)`` of every import of ``simulators`` in a module."""
    found: list[tuple[int, str | None]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            if any(name.split(".")[0] == "simulators" for name in names):
                found.append((child.lineno, function))
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            visit(child, inner)

    visit(tree, None)
    return found


def test_consumer_imports_simulators_only_inside_the_development_commands() -> None:
    allowed = {("consumer/cli.py", name) for name in ("_demo", "_kafka", "_simulate")}
    offending = []
    for path in sorted((REPO / "consumer").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        for line, function in _imports_of_simulators(ast.parse(path.read_text(encoding="utf-8"))):
            if (relative, function) not in allowed:
                offending.append(f"{relative}:{line} (in {function or 'the module'})")
    assert not offending, "consumer must not import simulators: " + ", ".join(offending)


# Built from parts so that this file does not name them itself.
OUTSIDE_PATHS = ("../" + "shared", "/work/" + "shared")
VENDOR_SCRIPT = "scripts/vendor_klaviyo_spec.py"


def test_nothing_names_the_reference_folder_beside_the_repository() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--",
         "*.py", "*.toml", "*.yaml", "*.yml", "*.md", "Dockerfile", "dev", ".ci/*"],
        capture_output=True, text=True, cwd=REPO, check=True, timeout=60,
    ).stdout.split()
    assert "consumer/cli.py" in listed and VENDOR_SCRIPT in listed
    found = []
    for relative in sorted(set(listed)):
        path = REPO / relative
        if not path.is_file():
            continue  # deleted in the work tree, not yet in the index
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if any(pattern in line for pattern in OUTSIDE_PATHS):
                found.append((relative, number, line.strip()))
    assert found == []
