"""Running the HTTP server as a service: /healthz, /readyz and /metrics answer outside the bearer
check, JSON logs name the prediction, and SIGTERM drains (503 first, then the port closes)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx2
import pytest

from flux_tools.emulator import Emulator

from .mcp_helpers import http_server, http_session, listening_url, server_env

pytestmark = pytest.mark.mcp

AUTH = "s3cret-bearer-token-for-the-ops-tests"


async def test_health_readiness_and_metrics_answer_without_the_token(
    emulator: Emulator, tmp_path: Path
) -> None:
    env = server_env(
        emulator.base_url,
        tmp_path / "images",
        FLUX_MCP_AUTH_TOKEN=AUTH,
        FLUX_MCP_LOG_FORMAT="json",
        FLUX_MCP_LOG_LEVEL="INFO",
    )
    with http_server(env, tmp_path) as server:
        url = listening_url(server)
        base = url.removesuffix("/mcp")
        assert httpx2.get(f"{base}/healthz").status_code == 200
        assert httpx2.get(f"{base}/readyz").json() == {"status": "ready"}
        assert httpx2.post(url, json={}).status_code == 401  # the MCP endpoint still needs it
        assert httpx2.post(f"{base}/metrics").status_code == 401  # GET only, else as any path
        async with http_session(url, token=AUTH) as session:
            result = await session.call("generate_image", {"prompt": "a metric of success"})
        pid = result["structuredContent"]["prediction_id"]
        metrics = httpx2.get(f"{base}/metrics").text
        # Draining: not ready at once, then the port closes, and the process exits by itself.
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        draining = httpx2.get(f"{base}/readyz").status_code
        server.proc.wait(timeout=15)
        log = server.stderr
    assert 'flux_generations_total{outcome="succeeded"} 1.0' in metrics
    assert 'flux_rate_limit_slots_total{lane="create"} 1.0' in metrics
    assert "flux_generations_in_flight 0.0" in metrics
    assert "flux_spend_usd_total" in metrics
    assert draining == 503
    assert server.proc.returncode == 0
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    created = [line for line in lines if line.get("prediction_id") == pid]
    assert any("created" in line["message"] for line in created), log
    assert AUTH not in log
