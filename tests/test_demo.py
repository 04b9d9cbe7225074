"""Issue 16, item 11: scripts/demo.sh never reports "ready" for a server that is not its
own: busy ports are refused up front, and its backend answers with the run's token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from fastapi.testclient import TestClient

from backend.main import create_app
from backend.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_demo_refuses_a_port_another_server_holds(tmp_path):
    with socket.socket() as busy, socket.socket() as free:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        free.bind(("127.0.0.1", 0))
        app_port = free.getsockname()[1]
        free.close()
        start = time.monotonic()
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / "demo.sh")], capture_output=True, text=True,
            timeout=60, env={**os.environ, "PYTHON": sys.executable,
                             "API_PORT": str(busy.getsockname()[1]), "APP_PORT": str(app_port),
                             "SPARLING_CHECKPOINTS": str(tmp_path)})
    assert result.returncode == 1
    assert "already in use" in result.stderr and "ready" not in result.stdout
    assert "starting the backend" not in result.stdout  # nothing was started
    assert time.monotonic() - start < 30


def test_the_backend_answers_with_the_runs_token(tmp_path):
    with TestClient(create_app(Settings(checkpoints=tmp_path, instance_id="demo-1-23"))) as c:
        assert c.get("/v1/health").headers["X-Sparling-Instance"] == "demo-1-23"
    with TestClient(create_app(Settings(checkpoints=tmp_path))) as c:
        assert "X-Sparling-Instance" not in c.get("/v1/health").headers


def test_demo_checks_the_token_and_that_its_child_lives():
    script = (ROOT / "scripts" / "demo.sh").read_text()
    assert 'wait_for "$SPARLING_API_URL/v1/health" 180 "${pids[0]}" "$SPARLING_INSTANCE_ID"' \
        in script
    assert "X-Sparling-Instance" in script and "kill -0" in script
