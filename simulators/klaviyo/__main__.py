"""``python -m simulators.klaviyo --port N``: run the Klaviyo simulator standalone."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from simulators.klaviyo.config import ApiKeyGrant, Faults, SimulatorConfig
from simulators.klaviyo.server import KlaviyoSimulator, serve_forever
from simulators.scaffold import Latency, add_run_options, serve_until_interrupted, simulator_parser


def _parser() -> argparse.ArgumentParser:
    parser = simulator_parser("python -m simulators.klaviyo", __doc__, 8765)
    parser.add_argument("--api-key", action="append", default=[], help="an extra private key to accept")
    parser.add_argument("--no-rate-limits", action="store_true", help="don't enforce Klaviyo's quotas")
    parser.add_argument("--rate-limit-scale", type=float, default=1.0, help="multiply every quota")
    parser.add_argument("--no-validate", action="store_true", help="skip OpenAPI request-body validation")
    parser.add_argument("--spec", type=Path, default=None, help="OpenAPI spec (default: $KLAVIYO_OPENAPI_SPEC "
                        "or the vendored contract, simulators/klaviyo/contract/openapi-klaviyo.json)")
    return add_run_options(parser)


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
    config = build_config(args)

    def set_latency(simulator: KlaviyoSimulator, latency: Latency) -> None:
        simulator.faults = Faults(latency=latency)

    return serve_until_interrupted(
        lambda: KlaviyoSimulator(config, host=args.host, port=args.port), "Klaviyo",
        latency_ms=args.latency_ms, set_latency=set_latency,
    )


__all__ = ["main", "serve_forever"]

if __name__ == "__main__":
    sys.exit(main())
