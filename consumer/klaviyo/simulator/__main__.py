"""``python -m consumer.klaviyo.simulator --port N``: run the Klaviyo simulator standalone."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from consumer.klaviyo.simulator.config import ApiKeyGrant, Faults, Latency, SimulatorConfig
from consumer.klaviyo.simulator.server import serve_forever


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m consumer.klaviyo.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (printed on start)")
    parser.add_argument("--api-key", action="append", default=[], help="an extra private key to accept")
    parser.add_argument("--no-rate-limits", action="store_true", help="don't enforce Klaviyo's quotas")
    parser.add_argument("--rate-limit-scale", type=float, default=1.0, help="multiply every quota")
    parser.add_argument("--no-validate", action="store_true", help="skip OpenAPI request-body validation")
    parser.add_argument("--spec", type=Path, default=None, help="OpenAPI spec (default: $KLAVIYO_OPENAPI_SPEC "
                        "or ../shared/reference/klaviyo/openapi-stable.json)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added latency per response")
    parser.add_argument("--seed", type=int, default=None)
    return parser


def build_config(args: argparse.Namespace) -> SimulatorConfig:
    config = SimulatorConfig(
        rate_limits_enabled=not args.no_rate_limits,
        validate_bodies=not args.no_validate,
        spec_path=args.spec,
        seed=args.seed,
    )
    for key in args.api_key:
        config.api_keys[key] = ApiKeyGrant()
    if args.rate_limit_scale != 1.0:
        config.rate_limits = {name: limit.scaled(args.rate_limit_scale) for name, limit in config.rate_limits.items()}
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and serve until interrupted."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = build_config(args)

    async def run() -> None:
        from consumer.klaviyo.simulator.server import KlaviyoSimulator

        async with KlaviyoSimulator(config, host=args.host, port=args.port) as simulator:
            if args.latency_ms:
                simulator.faults = Faults(latency=Latency(mean_ms=args.latency_ms))
            print(f"Klaviyo simulator listening on {simulator.base_url}", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


__all__ = ["main", "serve_forever"]

if __name__ == "__main__":
    sys.exit(main())
