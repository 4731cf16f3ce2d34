"""``python -m simulators.ipaas --port N``: run the iPaaS.com simulator standalone."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from simulators.ipaas.config import DEFAULT_TOKEN, Faults, SimulatorConfig
from simulators.ipaas.server import IpaasSimulator, serve_forever
from simulators.scaffold import Latency, add_run_options, serve_until_interrupted, simulator_parser


def _parser() -> argparse.ArgumentParser:
    parser = simulator_parser("python -m simulators.ipaas", __doc__, 8766)
    parser.add_argument("--token", action="append", default=[], help="an extra Bearer token to accept")
    parser.add_argument("--rate-limit", type=int, default=None, help="requests per second per token (429 beyond)")
    parser.add_argument("--max-text-length", type=int, default=255)
    return add_run_options(parser)


def build_config(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        tokens={DEFAULT_TOKEN, *args.token},
        rate_limit_per_s=args.rate_limit,
        max_text_length=args.max_text_length,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and serve until interrupted."""
    args = _parser().parse_args(argv)
    config = build_config(args)

    def set_latency(simulator: IpaasSimulator, latency: Latency) -> None:
        simulator.faults = Faults(latency=latency)

    return serve_until_interrupted(
        lambda: IpaasSimulator(config, host=args.host, port=args.port), "iPaaS.com",
        latency_ms=args.latency_ms, set_latency=set_latency,
    )


__all__ = ["main", "serve_forever"]

if __name__ == "__main__":
    sys.exit(main())
