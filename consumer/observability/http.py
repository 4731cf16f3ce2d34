"""Operational HTTP endpoints: ``/metrics`` (Prometheus), ``/healthz`` (liveness), ``/readyz`` (readiness), and
``/status`` (the JSON document of ``ipaas-klaviyo status``) when a status function is given.

Served from a small threaded stdlib server, so a busy or blocked event loop still answers scrapes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

Probe = Callable[[], tuple[bool, dict[str, object]]]


class OpsServer:
    """Serves the endpoints on ``host:port`` until ``close()``; port 0 picks a free port."""

    def __init__(self, host: str, port: int, *, live: Probe, ready: Probe,
                 registry: CollectorRegistry = REGISTRY,
                 status: Callable[[], dict[str, object]] | None = None) -> None:
        probes = {"/healthz": live, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/status" and status is not None:
                    self._send(200, orjson.dumps(status()), "application/json")
                elif path in probes:
                    ok, details = probes[path]()
                    body = orjson.dumps({"status": "ok" if ok else "unavailable", **details})
                    self._send(200 if ok else 503, body, "application/json")
                else:
                    self._send(404, b'{"status":"not found"}', "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # scrapes are not worth a log line
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ops-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> OpsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
