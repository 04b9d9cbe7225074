"""Run the service as a child process on 127.0.0.1 and wait until it is ready.

Used by the tests that go through a real uvicorn process and by bench/api.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command: list[str], env: dict[str, str], log: Path, port: int,
                 timeout: float = 90.0) -> subprocess.Popen:
    """Start `command` (in the repository, with os.environ plus `env`, output to `log`) and
    wait until GET /v1/ready on 127.0.0.1:`port` answers 200. Raises RuntimeError with the
    log when the process exits or is not ready in time."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=REPO, env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/ready", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError(f"server not ready after {timeout} s:\n{log.read_text()}")


def stop_server(proc: subprocess.Popen) -> None:
    """Terminate, then kill after 15 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
