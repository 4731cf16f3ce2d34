"""Dashboards as code: writes ``grafana/dashboards/*.json`` from plain Python dicts.

    python grafana/build_dashboards.py           # (re)write the JSON files
    python grafana/build_dashboards.py --check   # exit 1 when a committed file differs from the generator

The dashboards are built in ``grafana/dashboards_src/``: ``panels.py`` holds the panel, query, threshold and
dashboard builders, and each dashboard has its own module (``integration_monitoring.py``, ``runtime.py``). This
file only says which module writes which JSON file, and writes or checks them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # imported by file path (the tests) rather than run as a script
    sys.path.append(str(HERE))

from dashboards_src.integration_monitoring import integration_monitoring  # noqa: E402
from dashboards_src.panels import Json  # noqa: E402
from dashboards_src.runtime import runtime  # noqa: E402

DASHBOARD_DIR = HERE / "dashboards"

DASHBOARDS: dict[str, Callable[[], Json]] = {
    "integration-monitoring.json": integration_monitoring,
    "runtime.json": runtime,
}


def render(board: Json) -> str:
    """The JSON text written to disk (stable: same input, same bytes)."""
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    parser.add_argument("--out", type=Path, default=DASHBOARD_DIR)
    args = parser.parse_args(argv)
    stale = []
    for filename, build in DASHBOARDS.items():
        path = args.out / filename
        text = render(build())
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    for path in stale:
        print(f"{path} differs from the generator: run python grafana/build_dashboards.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
