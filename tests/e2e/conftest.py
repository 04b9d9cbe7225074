"""Fixtures for the browser tests: a real backend (uvicorn backend.main:app) on two tiny
checkpoints, the Streamlit app pointed at it, and headless Debian chromium driven by
Playwright. Everything binds 127.0.0.1 on free ports and is stopped at the end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it dies or stalls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{url}: the server exited ({process.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    pytest.fail(f"{url} did not answer 200 within {timeout:.0f} s:\n{log.read_text()}")


class Server:
    """A subprocess serving HTTP, with its output in a log file under test-artifacts/."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], port: int):
        self.name, self.args, self.env, self.port = name, args, env, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = ARTIFACTS / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self, ready_path: str, timeout: float = 120) -> Server:
        ARTIFACTS.mkdir(exist_ok=True)
        with self.log.open("w") as out:
            self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT)
        wait_for(self.url + ready_path, self.process, self.log, timeout)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARLING_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.skip("e2e: /usr/bin/chromium is missing; run scripts/install_chromium.sh "
                    "(Debian's chromium) first")
    pytest.importorskip("playwright.sync_api", reason="e2e: the playwright package is missing")
    return CHROMIUM


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, chromium_path) -> Path:
    """Two tiny trained-for-3-steps checkpoints, as the trainer writes them."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import make_tiny_checkpoint

    folder = tmp_path_factory.mktemp("checkpoints")
    make_tiny_checkpoint(folder / "tiny-a", density=0.01)
    make_tiny_checkpoint(folder / "tiny-b", density=0.02, evaluate_n=10)
    return folder


def start_backend(checkpoints: Path, port: int, name: str = "backend", **env: str) -> Server:
    args = [sys.executable, "-m", "uvicorn", "backend.main:app", "--host", "127.0.0.1",
            "--port", str(port)]
    # few validation images for the channel summaries: the tiny models are slow and dense
    env = _env(SPARLING_CHECKPOINTS=str(checkpoints), SPARLING_CHANNEL_SUMMARY_N="40", **env)
    return Server(name, args, env, port).start("/v1/ready")


def start_frontend(backend_url: str, port: int, name: str = "frontend") -> Server:
    args = [sys.executable, "-m", "streamlit", "run", "frontend/streamlit_app.py",
            "--server.address", "127.0.0.1", "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal"]
    server = Server(name, args, _env(SPARLING_API_URL=backend_url), port)
    return server.start("/_stcore/health", timeout=90)


@pytest.fixture(scope="module")
def backend(checkpoints) -> Iterator[Server]:
    server = start_backend(checkpoints, free_port())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def frontend(backend) -> Iterator[Server]:
    server = start_frontend(backend.url, free_port())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), headless=True,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1600})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()
