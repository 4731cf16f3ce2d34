"""``python -m consumer.ipaas.simulator --port N``: run the iPaaS.com simulator standalone."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

from consumer.ipaas.simulator.config import DEFAULT_TOKEN, Faults, Latency, SimulatorConfig
from consumer.ipaas.simulator.server import IpaasSimulator, serve_forever


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m consumer.ipaas.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766, help="0 picks a free port (printed on start)")
    parser.add_argument("--token", action="append", default=[], help="an extra Bearer token to accept")
    parser.add_argument("--rate-limit", type=int, default=None, help="requests per second per token (429 beyond)")
    parser.add_argument("--max-text-length", type=int, default=255)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added latency per response")
    parser.add_argument("--seed", type=int, default=None)
    return parser


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
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = build_config(args)

    async def run() -> None:
        async with IpaasSimulator(config, host=args.host, port=args.port) as simulator:
            if args.latency_ms:
                simulator.faults = Faults(latency=Latency(mean_ms=args.latency_ms))
            print(f"iPaaS.com simulator listening on {simulator.base_url}", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


__all__ = ["main", "serve_forever"]

if __name__ == "__main__":
    sys.exit(main())
