"""The service as it is started for real: a uvicorn process on 127.0.0.1, over HTTP."""

from __future__ import annotations

import http.client
import io
import json
import pathlib
import shutil
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from helpers import shared_tiny_checkpoint  # noqa: E402

from backend.process import free_port, start_server, stop_server  # noqa: E402
from sparling_core.domains import digit_circle as dc  # noqa: E402


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    shared = shared_tiny_checkpoint(tmp_path_factory)
    root = tmp_path_factory.mktemp("server-checkpoints")
    shutil.copytree(shared, root / "tiny")
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text('{"format_version": 99}')
    (root / "broken" / "model.safetensors").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory):
    port = free_port()
    env = {"SPARLING_CHECKPOINTS": str(checkpoints), "SPARLING_MAX_UPLOAD_BYTES": "200000",
           "SPARLING_CHANNEL_SUMMARY_N": "4", "SPARLING_API_KEY": "",
           "OMP_NUM_THREADS": "1"}
    log = tmp_path_factory.mktemp("server-log") / "uvicorn.log"
    proc = start_server([sys.executable, "-m", "uvicorn", "backend.main:app",
                         "--host", "127.0.0.1", "--port", str(port)], env, log, port)
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        stop_server(proc)
    assert proc.returncode is not None
    assert "Traceback" not in log.read_text(), log.read_text()  # no 500 on the way


def test_ready_over_http(server):
    url, _ = server
    body = httpx.get(f"{url}/v1/ready").json()
    assert body["models"] == ["tiny"]
    assert "format version 99" in body["errors"]["broken"]
    assert httpx.get(f"{url}/v1/health").json() == {"status": "ok"}
    assert httpx.get(f"{url}/docs").status_code == 200


def test_png_upload_over_http(server):
    url, _ = server
    image = dc.sample(8).image
    buffer = io.BytesIO()
    Image.fromarray(image * 255, mode="L").save(buffer, format="PNG")
    by_png = httpx.post(f"{url}/v1/models/tiny/activations",
                        files={"file": ("x.png", buffer.getvalue(), "image/png")}, timeout=30)
    by_json = httpx.post(f"{url}/v1/models/tiny/activations",
                         json={"image": image.tolist()}, timeout=30)
    assert by_png.status_code == by_json.status_code == 200
    assert by_png.json() == by_json.json()
    assert by_png.json()["n_active"] == len(by_png.json()["activations"])


def test_every_kind_of_request_over_http(server):
    url, _ = server
    with httpx.Client(base_url=url, timeout=60) as c:
        assert c.get("/v1/models").json()["errors"].keys() == {"broken"}
        assert c.get("/v1/models/tiny").json()["id"] == "tiny"
        assert len(c.get("/v1/models/tiny/history").json()["history"]) == 3
        assert c.get("/v1/samples/8").json()["label"] == [str(d) for d in dc.sample(8).label]
        analysis = c.post("/v1/models/tiny/analysis", json={"seed": 8}).json()
        assert len(analysis["motifs"]) == len(dc.sample(8).motifs)
        channels = c.get("/v1/models/tiny/channels", params={"wait": 50}).json()["channels"]
        assert len(channels) == 10
        detail = c.get("/v1/models/tiny/channels/2", params={"wait": 50}).json()
        assert len(detail["top_crops"]) <= 12
        r = c.post("/v1/models/tiny/intervene",
                   json={"seed": 8, "add": [{"channel": 1, "row": 2, "col": 3, "value": 4.0}]})
        assert r.status_code == 200 and r.json()["added"] == 1
        r = c.post("/v1/models/tiny/activations/batch", params={"fit": "pad"},
                   json={"images": [[[1.0]], [[0.0]]]})
        assert r.status_code == 200 and len(r.json()["results"]) == 2


@pytest.mark.parametrize("raw_path", [
    "/v1/models/../tiny", "/v1/models/..%2ftiny", "/v1/models/%2e%2e/history",
    "/v1/models/%2e%2e%2f%2e%2e%2fetc/history", "/v1/models/..%5c..%5cetc",
    "/v1/models/tiny%00/history", "/v1/models/%2Ftmp/history",
])
def test_path_traversal_is_404_over_raw_http(server, raw_path):
    _, port = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", raw_path)  # sent as written, no client-side normalisation
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 404, (raw_path, body)
    assert body["detail"]


def test_body_limits_over_http(server):
    url, port = server
    r = httpx.post(f"{url}/v1/models/tiny/activations", content=b"x" * 200_001,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413
    # a Content-Length that promises too much is refused before the body is read
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("POST", "/v1/models/tiny/activations")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(10**9))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
    finally:
        conn.close()

    def chunks():
        for _ in range(50):
            yield b" " * 10_000

    r = httpx.post(f"{url}/v1/models/tiny/activations", content=chunks(),
                   headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_bad_uploads_over_http(server):
    url, _ = server
    png = io.BytesIO()
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(png, format="PNG")
    for data in (b"", b"garbage", png.getvalue()[:50]):
        r = httpx.post(f"{url}/v1/models/tiny/activations",
                       files={"file": ("x.png", data, "image/png")})
        assert r.status_code == 422, r.text


def test_python_m_backend_reads_host_and_port(checkpoints, tmp_path):
    port = free_port()
    env = {"SPARLING_CHECKPOINTS": str(checkpoints), "SPARLING_HOST": "127.0.0.1",
           "SPARLING_PORT": str(port), "SPARLING_API_KEY": "key", "OMP_NUM_THREADS": "1"}
    proc = start_server([sys.executable, "-m", "backend"], env, tmp_path / "log", port)
    try:
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert httpx.get(f"{url}/v1/models", headers={"X-API-Key": "key"}).status_code == 200
    finally:
        stop_server(proc)
