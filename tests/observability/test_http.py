"""The operational endpoints and the JSON logs."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

from consumer.observability import logs, metrics
from consumer.observability.http import OpsServer


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_health_endpoints_answer_from_their_probes_and_metrics_are_prometheus_text():
    metrics.initialize()
    state = {"ready": False}
    server = OpsServer("127.0.0.1", 0, live=lambda: (True, {"paused": []}),
                       ready=lambda: (state["ready"], {"partitions": 0})).start()
    try:
        assert _get(server.port, "/healthz") == (200, b'{"status":"ok","paused":[]}')
        status, body = _get(server.port, "/readyz")
        assert status == 503 and json.loads(body)["status"] == "unavailable"
        state["ready"] = True
        assert _get(server.port, "/readyz")[0] == 200
        status, body = _get(server.port, "/metrics")
        assert status == 200 and b"# TYPE ipaas_klaviyo_events_received_total counter" in body
        assert _get(server.port, "/nothing")[0] == 404
    finally:
        server.close()


def test_log_lines_are_json_with_their_fields_and_no_secrets(capsys):
    logs.configure("INFO")
    try:
        logging.getLogger("consumer.test").warning(
            "calling with Authorization: Klaviyo-API-Key pk_abcdef1234567890", extra={"flow": "add_profile"})
    finally:
        logging.getLogger().handlers.clear()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    entry = json.loads(line)
    assert entry["level"] == "warning" and entry["logger"] == "consumer.test" and entry["flow"] == "add_profile"
    assert "pk_abcdef1234567890" not in line
