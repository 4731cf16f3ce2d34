"""The layers of ``consumer`` that must hold, checked on the source (until import-linter does it in CI).

The import graph is read with ``ast`` from every ``consumer/**/*.py``: imports at module level, under
``if TYPE_CHECKING:`` and inside functions all count (an import deferred into a function is still a dependency).

* the failure path (``consumer.failures``) never reaches the composition root (``consumer.app``) or the command
  line (``consumer.cli``), not even through another module: they pass it what it needs;
* no import cycle goes through a module of ``consumer.failures``;
* the flows import neither Kafka (``aiokafka``) nor the failure path: they raise errors and report warnings
  through their ``FlowContext``.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import consumer

PACKAGE_DIR = Path(consumer.__file__).parent
FAILURES = "consumer.failures"
COMPOSITION = ("consumer.app", "consumer.cli")


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _sources() -> dict[str, Path]:
    return {_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _imported(module: str) -> set[str]:
    """Every dotted name ``module`` imports, anywhere in the file (``from a import b`` gives ``a`` and ``a.b``)."""
    path = _sources()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _module_of(name: str) -> str | None:
    """The ``consumer`` module a dotted name is, or is an attribute of (None: outside ``consumer``)."""
    while name:
        if name in _sources():
            return name
        name = name.rpartition(".")[0]
    return None


@cache
def graph() -> dict[str, frozenset[str]]:
    """``consumer`` module → the ``consumer`` modules it imports."""
    return {module: frozenset(found for name in _imported(module)
                              if (found := _module_of(name)) is not None and found != module)
            for module in _sources()}


def _path(start: str, targets: Iterable[str]) -> list[str] | None:
    """A shortest import chain from ``start`` to one of ``targets`` (``start`` itself: a cycle); None: none."""
    wanted = set(targets)
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        current = queue.popleft()
        for following in sorted(graph()[current]):
            if following in wanted:
                chain = [following, current]
                while chain[-1] != start:
                    chain.append(previous[chain[-1]])
                return chain[::-1]
            if following != start and following not in previous:
                previous[following] = current
                queue.append(following)
    return None


def _in(package: str) -> list[str]:
    return [module for module in _sources() if module == package or module.startswith(package + ".")]


def test_the_graph_is_read():
    failures = _in(FAILURES)
    assert {"consumer.failures.replay", "consumer.failures.headers", "consumer.failures.scan"} <= set(failures)
    assert "consumer.failures.deadletters" in graph()["consumer.failures.replay"]
    assert "consumer.app" in graph()["consumer.cli"]  # imports inside functions count
    assert "consumer.failures.replay" in graph()["consumer.cli"]  # (under TYPE_CHECKING too)


def test_the_failure_path_never_reaches_the_composition_root_or_the_command_line():
    for module in _in(FAILURES):
        assert not set(_imported(module)) & set(COMPOSITION), f"{module} imports {COMPOSITION}"
        chain = _path(module, COMPOSITION)
        assert chain is None, "the failure path reaches the composition root: " + " → ".join(chain or [])


def test_no_import_cycle_goes_through_the_failure_path():
    for module in _in(FAILURES):
        chain = _path(module, [module])
        assert chain is None, "import cycle: " + " → ".join(chain or [])


def test_the_flows_import_neither_kafka_nor_the_failure_path():
    for module in _in("consumer.flows"):
        for name in _imported(module):
            assert not (name == "aiokafka" or name.startswith("aiokafka.")), f"{module} imports {name}"
            assert not (name == FAILURES or name.startswith(FAILURES + ".")), f"{module} imports {name}"
