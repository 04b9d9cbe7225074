"""backend/README.md's curl examples: one per route of the API, each run (as `curl -sf`, in
bash) against a live service on the shipped digit-circle-mt, each answering JSON.

    .venv/bin/python -m pytest tests/test_curl_examples.py
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "backend" / "README.md"
URL_IN_DOC = "http://127.0.0.1:8000"
CURL = re.compile(r"(?<![\w/.-])curl ")


def _curl_blocks() -> list[str]:
    blocks = re.findall(r"^```bash\n(.*?)^```", README.read_text(), re.S | re.M)
    return [b for b in blocks if b.lstrip().startswith("curl ")]


def _calls(block: str) -> list[tuple[str, str]]:
    """(method, path) of each curl in a block."""
    calls = []
    for part in CURL.split(block)[1:]:
        path = re.search(re.escape(URL_IN_DOC) + r"(/[^\s\"'?]*)", part)
        assert path, f"a curl without {URL_IN_DOC}: {part!r}"
        calls.append(("POST" if re.search(r"-X POST|-d |-F ", part) else "GET", path[1]))
    return calls


def _name(block: str) -> str:
    method, path = _calls(block)[-1]
    return f"{method} {path}" + (" (file)" if "-F " in block else "")


BLOCKS = _curl_blocks()


def test_every_route_has_a_curl_example():
    from backend.main import create_app

    schema = create_app().openapi()
    routes = {(method.upper(), path) for path, item in schema["paths"].items()
              for method in item if path.startswith("/v1/")}
    shown = {call for block in BLOCKS for call in _calls(block)}
    for method, template in sorted(routes):
        pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")
        assert any(m == method and pattern.match(p) for m, p in shown), (
            f"backend/README.md has no curl example of {method} {template}")
    activations = [b for b in BLOCKS if re.search(r"/activations[\"?\s]", b)]
    assert any("-F " in b for b in activations) and any("-d " in b for b in activations), (
        "activations needs a JSON and a file upload example")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Where the examples run: samples/7.png written as the README says."""
    folder = tmp_path_factory.mktemp("curl-work")
    subprocess.run([sys.executable, "-m", "sparling_core.cli", "sample", "--seed", "7",
                    "--out", "samples"], cwd=folder, check=True, capture_output=True)
    assert (folder / "samples" / "7.png").is_file()
    return folder


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("block", BLOCKS, ids=[_name(b) for b in BLOCKS])
def test_curl_example_answers_json(block, shipped_service, workdir):
    command = CURL.sub("curl -sf ", block.replace(URL_IN_DOC, shipped_service))
    done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + command], cwd=workdir,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (command, done.returncode, done.stderr)
    body = json.loads(done.stdout)
    assert isinstance(body, dict) and "detail" not in body, body
