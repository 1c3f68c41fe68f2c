"""`python -m edge.main` as a process: starts, serves (its metrics on their own
port), stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from edge.main import start
from tests.edge.conftest import edge_settings


@pytest.mark.slow
def test_the_edge_process_serves_and_stops_on_sigterm() -> None:
    env = {**os.environ, "QUANTIZED_EDGE_PORT": "0", "QUANTIZED_EDGE_GRPC_LISTEN": "127.0.0.1:0",
           "QUANTIZED_CATALOG_ADDR": "127.0.0.1:9", "QUANTIZED_EDGE_SHUTDOWN_GRACE_SECONDS": "1",
           "QUANTIZED_EDGE_METRICS_LISTEN": "127.0.0.1:0"}
    process = subprocess.Popen([sys.executable, "-m", "edge.main"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        ports = None
        metrics_address = None
        for line in process.stderr:
            entry = json.loads(line)
            if entry["message"] == "metrics listening":
                metrics_address = entry["metrics_address"]
            if entry["message"] == "edge listening":
                ports = entry
                break
        assert ports is not None and ports["http_port"] > 0 and ports["grpc_port"] > 0
        assert metrics_address is not None
        # uvloop is installed with uvicorn[standard]; the process runs on it.
        assert ports["event_loop"] == "uvloop"
        response = httpx.get(f"http://127.0.0.1:{ports['http_port']}/openapi.json", timeout=10)
        assert response.status_code == 200
        unauthenticated = httpx.post(f"http://127.0.0.1:{ports['http_port']}/v1/images/generations", json={},
                                     timeout=10)
        assert unauthenticated.status_code == 401
        metrics = httpx.get(f"http://{metrics_address}/metrics", timeout=10)
        assert metrics.status_code == 200
        assert ('quantized_edge_requests_total{model="",provider="",route="/v1/images/generations",'
                'status_class="4xx"} 1.0') in metrics.text
        assert httpx.get(f"http://127.0.0.1:{ports['http_port']}/metrics", timeout=10).status_code == 404
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert "edge stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


async def test_a_bad_grpc_address_fails_start_cleanly() -> None:
    """The HTTP server already started is stopped again and its socket closed
    (an unclosed socket would fail this test: warnings are errors)."""
    with pytest.raises(RuntimeError):
        await start(edge_settings("127.0.0.1:9", listen="999.0.0.1:1"))
