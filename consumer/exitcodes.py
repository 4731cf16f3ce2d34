"""The command line's exit codes, and the one line an error ends a command with (never a traceback).

0: done; 1: it failed (the broker or an API does not answer, a dead letter is not there, a replay failed again);
2: usage or configuration (a bad argument, an invalid or unknown setting, a missing topic or mapping file);
130: interrupted. ``explain`` turns the exception that ended a command into its lines and code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from consumer.catalog import CatalogError

OK, FAILURE, USAGE, INTERRUPTED = 0, 1, 2, 130

# the catalog's entries that mean "this installation is not configured" (the fix is a setting)
_CONFIGURATION_CODES = frozenset({"CLIENT_ID_NOT_CONFIGURED", "CLIENT_SECRET_NOT_CONFIGURED",
                                  "REDIRECT_URL_NOT_CONFIGURED"})


def explain(exc: BaseException) -> tuple[Sequence[str], int]:
    """The lines (what, where, how to fix; without the program's name) and the exit code for ``exc``."""
    from aiokafka.errors import KafkaConnectionError, KafkaError

    from consumer.app import ConfigurationError
    from consumer.mapping import MappingError
    from consumer.preflight import PreflightFailed
    from consumer.settings import InvalidSettings

    if isinstance(exc, InvalidSettings):
        return exc.problems, USAGE
    if isinstance(exc, PreflightFailed):
        return [exc.check.text], exc.check.exit_code
    if isinstance(exc, ConfigurationError):
        return [str(exc)], USAGE
    if isinstance(exc, MappingError):
        return [f"mapping {exc} (mapping_dir, IPAAS_KLAVIYO_MAPPING_DIR)"], USAGE
    if isinstance(exc, CatalogError):
        return catalog_lines(exc), USAGE if exc.code in _CONFIGURATION_CODES else FAILURE
    if isinstance(exc, KafkaConnectionError):
        return [f"Kafka is not reachable: {exc}; check kafka.bootstrap_servers "
                "(IPAAS_KLAVIYO_KAFKA__BOOTSTRAP_SERVERS) with `ipaas-klaviyo config check`"], FAILURE
    if isinstance(exc, KafkaError):
        return [f"Kafka refused the request: {exc}"], FAILURE
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
        return [f"{exc.filename}: {exc.strerror}"], USAGE
    if isinstance(exc, TimeoutError):
        return [f"timed out: {exc}" if str(exc) else "timed out"], FAILURE
    if isinstance(exc, ValueError):
        return [str(exc)], USAGE
    if isinstance(exc, OSError):
        return [str(exc)], FAILURE
    if isinstance(exc, asyncio.CancelledError):
        return ["the command was cancelled before it finished (run with --debug for the traceback)"], FAILURE
    return [f"unexpected error: {type(exc).__name__}: {exc} (run with --debug for the traceback)"], FAILURE


def catalog_lines(error: CatalogError) -> list[str]:
    """A catalog error as the command line shows it: title and message, then the detail and the fix."""
    entry = error.entry
    lines = [f"{entry.title}: {error.message}"]
    if error.detail and error.detail not in error.message:
        lines.append(f"  detail: {error.detail}")
    lines.append(f"  what it means: {entry.meaning}")
    lines.append(f"  what to do: {entry.action}")
    if entry.operator_hint:
        lines.append(f"  self-hosted: {entry.operator_hint}")
    return lines
