"""Issue 16, the service: hostile inputs and load must give clear 4xx / 503, never 500, hangs,
disclosure or unbounded memory."""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from helpers import shared_tiny_checkpoint  # noqa: E402

from backend.main import create_app  # noqa: E402
from backend.settings import Settings  # noqa: E402


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    tiny = shared_tiny_checkpoint(tmp_path_factory)
    root = tmp_path_factory.mktemp("hardening-checkpoints")
    shutil.copytree(tiny, root / "tiny")
    return root


def make_client(checkpoints: pathlib.Path, **overrides) -> TestClient:
    settings = Settings(checkpoints=checkpoints, **{"channel_summary_n": 4, **overrides})
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(checkpoints):
    with make_client(checkpoints) as c:
        yield c


def post_raw(client, path: str, text: str):
    return client.post(path, content=text.encode(), headers={"content-type": "application/json"})


# --- 2. NaN / Infinity in bodies that fail validation; bounded error bodies -------------

@pytest.mark.parametrize("path, text", [
    ("/v1/models/tiny/analysis", '{"seed": NaN}'),
    ("/v1/models/tiny/analysis", '{"seed": Infinity}'),
    ("/v1/models/tiny/analysis", '{"seed": -Infinity}'),
    ("/v1/models/tiny/analysis", '{"image": [[0.5]], "motifs": [], "label": [NaN]}'),
    ("/v1/models/tiny/intervene", '{"seed": NaN}'),
    ("/v1/models/tiny/intervene", '{"seed": 1, "add": [{"channel": NaN, "row": 0, "col": 0, '
                                  '"value": 1}]}'),
    ("/v1/models/tiny/intervene", '{"seed": 1, "add": [{"channel": 0, "row": 0, "col": 0, '
                                  '"value": NaN}]}'),
    ("/v1/models/tiny/activations/batch", '{"images": NaN}'),
    ("/v1/models/tiny/activations/batch", '{"images": [[[NaN]]], "x": Infinity}'),
    ("/v1/models/tiny/activations", '{"image": NaN}'),
])
def test_nan_and_infinity_in_invalid_bodies_are_422(client, path, text):
    r = post_raw(client, path, text)
    assert r.status_code == 422, r.text
    json.loads(r.text)  # strict JSON: no bare NaN written back


def test_validation_errors_do_not_echo_large_inputs(client):
    big = "x" * 200_000
    for path, body in [("/v1/models/tiny/analysis", {"seed": big}),
                       ("/v1/models/tiny/intervene", {"seed": big, "remove": [big] * 3}),
                       ("/v1/models/tiny/activations/batch",
                        {"images": [[["a"] * 1000] * 40]})]:
        r = client.post(path, json=body)
        assert r.status_code == 422
        assert len(r.content) < 10_000, (path, len(r.content))
        assert r.json()["detail"]  # still says what is wrong
