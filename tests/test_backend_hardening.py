"""Issue 16, the service: hostile inputs and load must give clear 4xx / 503, never 500, hangs,
disclosure or unbounded memory."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import threading

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from helpers import shared_tiny_checkpoint  # noqa: E402

from backend.limits import InferenceQueue  # noqa: E402
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


# --- 5. hostile checkpoint folders --------------------------------------------------------

def _with_config(src: pathlib.Path, dst: pathlib.Path, **model) -> None:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "config.json").read_text())
    meta["model"].update(model)
    (dst / "config.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A checkpoints folder with one good model and many bad ones; a secret outside it."""
    tiny = shared_tiny_checkpoint(tmp_path_factory)
    base = tmp_path_factory.mktemp("hostile")
    secret = base / "secret.json"
    secret.write_text(json.dumps({"e2ee": 1.0, "password": "hunter2"}))
    root = base / "checkpoints"
    root.mkdir()
    shutil.copytree(tiny, root / "good")
    shutil.copytree(tiny, root / "metrics-link")
    (root / "metrics-link" / "metrics.json").unlink()
    (root / "metrics-link" / "metrics.json").symlink_to(secret)
    shutil.copytree(tiny, root / "weights-link")
    (root / "weights-link" / "model.safetensors").unlink()
    (root / "weights-link" / "model.safetensors").symlink_to(tiny / "model.safetensors")
    (root / "folder-link").symlink_to(tiny, target_is_directory=True)
    shutil.copytree(tiny, root / "fifo-history")
    (root / "fifo-history" / "history.jsonl").unlink()
    os.mkfifo(root / "fifo-history" / "history.jsonl")
    shutil.copytree(tiny, root / "dir-metrics")
    (root / "dir-metrics" / "metrics.json").unlink()
    (root / "dir-metrics" / "metrics.json").mkdir()
    _with_config(tiny, root / "float-size", image_size=100.0)
    _with_config(tiny, root / "bool-channels", motif_channels=True)
    _with_config(tiny, root / "huge-width", d_model=10**9)
    _with_config(tiny, root / "string-layers", motif_layers="3")
    shutil.copytree(tiny, root / "latin1-metrics")
    (root / "latin1-metrics" / "metrics.json").write_bytes(b'{"note": "caf\xe9"}')
    shutil.copytree(tiny, root / "model-not-object")
    meta = json.loads((root / "model-not-object" / "config.json").read_text())
    (root / "model-not-object" / "config.json").write_text(json.dumps({**meta, "model": 5}))
    return root


@pytest.fixture(scope="module")
def hostile_client(hostile):
    result = {}

    def start():
        result["client"] = make_client(hostile).__enter__()

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "start-up hangs on a hostile checkpoint folder"
    yield result["client"]
    result["client"].__exit__(None, None, None)


@pytest.mark.parametrize("name, reason", [
    ("metrics-link", "symbolic link"),
    ("weights-link", "symbolic link"),
    ("folder-link", "symbolic link"),
    ("fifo-history", "not a regular file"),
    ("dir-metrics", "not a regular file"),
    ("float-size", "image_size must be an integer"),
    ("bool-channels", "motif_channels must be an integer"),
    ("huge-width", "d_model must be in"),
    ("string-layers", "motif_layers must be an integer"),
    ("latin1-metrics", "not UTF-8"),
    ("model-not-object", "invalid model config"),
])
def test_hostile_checkpoint_folders_are_refused_alone(hostile_client, hostile, name, reason):
    ready = hostile_client.get("/v1/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["models"] == ["good"], body  # the others do not touch the good one
    assert reason in body["errors"][name]
    assert str(hostile) not in ready.text  # no server path
    assert hostile_client.get(f"/v1/models/{name}").status_code == 404
    r = hostile_client.post("/v1/models/good/intervene", json={"seed": 1})
    assert r.status_code == 200, r.text


def test_symlinked_secrets_are_never_served(hostile_client):
    for path in ("/v1/models", "/v1/models/good", "/v1/ready"):
        assert "hunter2" not in hostile_client.get(path).text


# --- 4. amplification: a cap on the values a response carries ------------------------------

def test_tiny_images_cannot_amplify_into_huge_responses(client):
    body = json.dumps({"images": [[[0]]] * 32})  # ~200 bytes
    r = client.post("/v1/models/tiny/activations/batch", params={"fit": "resize", "dense": True},
                    content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413, r.status_code
    detail = r.json()["detail"]
    assert "500000" in detail and "SPARLING_MAX_RESPONSE_VALUES" in detail
    one = client.post("/v1/models/tiny/activations", params={"fit": "resize", "dense": True},
                      json={"image": [[0]]})
    assert one.status_code == 200  # one dense map (100,000 values) is fine


def test_the_cap_counts_sparse_activations_too(checkpoints):
    with make_client(checkpoints, max_response_values=20_000) as c:
        blank = [[0.0] * 100] * 100  # the tiny model fires thousands of entries on it
        r = c.post("/v1/models/tiny/activations/batch", json={"images": [blank] * 8})
        assert r.status_code == 413 and "20000" in r.json()["detail"]
        r = c.post("/v1/models/tiny/intervene", json={"image": blank})
        assert r.status_code == 413


# --- 3. backpressure; health and readiness never wait for the thread pool ------------------

def test_a_full_queue_answers_503_with_retry_after_and_health_stays_fast(checkpoints):
    import time
    from concurrent.futures import ThreadPoolExecutor

    body = {"image": [[0.0] * 100] * 100}
    with make_client(checkpoints, max_queue_per_model=2) as c:
        loaded = c.app.state.store.get("tiny")
        loaded.lock.acquire()  # the model is busy: requests queue behind it
        try:
            with ThreadPoolExecutor(2) as pool:
                waiting = [pool.submit(c.post, "/v1/models/tiny/activations", json=body)
                           for _ in range(2)]
                queue = c.app.middleware_stack
                while not isinstance(queue, InferenceQueue):
                    queue = queue.app
                deadline = time.monotonic() + 20
                while queue.active.get("model:tiny", 0) < 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert queue.active.get("model:tiny") == 2
                r = c.post("/v1/models/tiny/activations", json=body)
                assert r.status_code == 503, r.text
                assert r.headers["Retry-After"] == "1"
                assert "SPARLING_MAX_QUEUE_PER_MODEL" in r.json()["detail"]
                other = c.get("/v1/samples/3")  # another queue: not blocked by this model
                assert other.status_code == 200
                start = time.monotonic()
                assert c.get("/v1/health").status_code == 200
                assert c.get("/v1/ready").status_code == 200
                assert time.monotonic() - start < 1.0
                loaded.lock.release()
                assert [f.result(timeout=30).status_code for f in waiting] == [200, 200]
        finally:
            if loaded.lock.locked():
                loaded.lock.release()
        assert c.post("/v1/models/tiny/activations", json=body).status_code == 200


def test_health_and_ready_never_use_the_thread_pool():
    """Sync endpoints and dependencies run in the thread pool, where the models' requests
    wait; health and readiness (and what they depend on) are coroutines instead."""
    import inspect

    from backend import deps
    from backend.routers import health

    for fn in (health.health, health.ready, deps.get_store, deps.get_settings,
               deps.get_model, deps.require_api_key):
        assert inspect.iscoroutinefunction(fn), fn


# --- 6. disclosure ----------------------------------------------------------------------------

def test_readiness_shows_no_server_paths(tmp_path):
    missing, empty = tmp_path.resolve() / "nowhere", tmp_path.resolve() / "empty"
    empty.mkdir()
    (empty / "junk").mkdir()
    for folder in (missing, empty):
        with make_client(folder) as c:
            r = c.get("/v1/ready")
            assert r.status_code == 503
            assert str(tmp_path.resolve()) not in r.text and "/" not in r.json()["detail"]


@pytest.mark.parametrize("data", [
    b"\x89PNG\r\n\x1a\n" + b"\0" * 40,  # a PNG signature, then garbage
    b"\xff\xd8\xff" + b"\0" * 40,
    b"\x93NUMPY\x01\x00\x10\x00{'descr': 'foo'}\n",
])
def test_image_errors_carry_no_object_addresses(client, data):
    r = client.post("/v1/models/tiny/activations", files={"file": ("x", data)})
    assert r.status_code == 422
    assert "0x" not in r.text and " at 0" not in r.text and "object" not in r.text, r.text


def test_unknown_model_404_lists_no_ids(client):
    r = client.get("/v1/models/nope")
    assert r.status_code == 404 and "tiny" not in r.text
    assert "GET /v1/models" in r.json()["detail"]


def test_with_an_api_key_only_health_readiness_and_docs_stay_open(checkpoints):
    key = {"X-API-Key": "s3cret"}
    with make_client(checkpoints, api_key="s3cret") as c:
        assert c.get("/v1/health").json() == {"status": "ok"}
        open_ready = c.get("/v1/ready").json()
        assert open_ready == {"status": "ready", "models": [], "errors": {}}
        assert c.get("/v1/ready", headers=key).json()["models"] == ["tiny"]
        assert c.get("/openapi.json").status_code == 200
        for path in ("/v1/models", "/v1/models/tiny", "/v1/samples/3", "/v1/models/nope"):
            assert c.get(path).status_code == 401, path
            assert "tiny" not in c.get(path).text
        assert c.get("/v1/models", headers=key).status_code == 200


# --- 7. /docs without internet ------------------------------------------------------------------

def test_docs_load_every_asset_from_this_server(client):
    import re

    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assets = [u for u in urls if u.endswith((".js", ".css"))]
    assert len(assets) >= 2, page.text
    for url in urls:
        assert not url.startswith(("http:", "https:", "//")), url  # no CDN
    for url in assets:
        r = client.get(url)
        assert r.status_code == 200 and len(r.content) > 1000, url
    assert "SwaggerUIBundle" in client.get(assets[0] if assets[0].endswith(".js")
                                           else assets[1]).text


def test_docs_without_the_assets_package_say_so(checkpoints, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_bundle(name, *args, **kwargs):
        if name == "swagger_ui_bundle":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bundle)
    with make_client(checkpoints) as c:
        page = c.get("/docs")
    assert page.status_code == 200 and "swagger-ui-bundle" in page.text
    assert "/openapi.json" in page.text and "https:" not in page.text
