"""The simulator as a standalone process: ``python -m simulators.klaviyo``."""

from __future__ import annotations

import asyncio
import sys

import httpx

from simulators.klaviyo import DEFAULT_API_KEY
from simulators.klaviyo.__main__ import _parser, build_config


async def test_standalone_process_serves_and_stops() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators.klaviyo", "--port", "0", "--no-rate-limits",
        "--api-key", "pk_extraextraextraextraextraextraextra",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line.startswith("Klaviyo simulator listening on http://127.0.0.1:")
        base_url = line.rsplit(" ", 1)[-1].strip()
        async with httpx.AsyncClient(base_url=base_url) as http:
            response = await http.post(
                "/api/profiles", json={"data": {"type": "profile", "attributes": {"email": "cli@shop.test"}}},
                headers={"authorization": "Klaviyo-API-Key pk_extraextraextraextraextraextraextra",
                         "revision": "2026-07-15"},
            )
            assert response.status_code == 201
            assert (await http.get("/__admin/config")).json()["rate_limits_enabled"] is False
    finally:
        process.terminate()
        await process.wait()


def test_cli_options_build_the_config() -> None:
    config = build_config(_parser().parse_args(["--rate-limit-scale", "0.1", "--no-validate", "--seed", "4"]))
    assert config.rate_limits["create_event"].burst == 35 and not config.validate_bodies and config.seed == 4
    assert DEFAULT_API_KEY in config.api_keys
