"""sparling_client: imports without torch or the library, and every method against the real
app (in-process, through FastAPI's TestClient in place of the requests session), with the
same answers as the Python API.

    .venv/bin/python -m pytest tests/test_client.py
"""

from __future__ import annotations

import ast
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from backend.main import create_app
from backend.settings import Settings
from sparling_client import ApiError, Client
from sparling_core import get_domain, load_checkpoint, run

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "checkpoints" / "digit-circle-mt"
MODEL = SHIPPED.name
pytestmark = pytest.mark.filterwarnings(  # requests' timeout= means nothing to TestClient
    "ignore:You should not use the 'timeout' argument")


def test_client_needs_neither_torch_nor_the_library():
    code = ("import sys, sparling_client; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'numpy', 'sparling_core', 'backend', 'frontend', 'fastapi'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"
    allowed = set(sys.stdlib_module_names) | {"requests", "sparling_client"}
    for path in (ROOT / "sparling_client").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = tmp_path_factory.mktemp("client-checkpoints")
    shutil.copytree(SHIPPED, folder / MODEL)  # copied: the service refuses symlinked folders
    settings = Settings(checkpoints=folder, channel_summary_n=4, api_key="k")
    with TestClient(create_app(settings)) as app:
        rest = Client("http://testserver/", api_key="k")
        app.headers["X-API-Key"] = rest._session.headers["X-API-Key"]
        rest._session = app  # TestClient takes requests' call signature
        yield rest


def test_service_routes(client):
    assert repr(client) == "Client('http://testserver')"
    assert client.health() == {"status": "ok"}
    assert client.wait_until_ready(timeout=5)["models"] == [MODEL]
    models = client.models()
    assert [m["id"] for m in models["models"]] == [MODEL] and models["default"] == MODEL
    assert client.model(MODEL)["assignment"]["5"] == "6"
    assert len(client.history(MODEL)["history"]) > 10
    assert "digit-circle" in [d["name"] for d in client.domains()["domains"]]


def test_samples_three_ways(client):
    expected = get_domain("digit-circle").sample(7)
    for sample in (client.sample(7), client.sample(7, MODEL),
                   client.sample(7, domain="digit-circle", split="train")):
        assert sample["label"] == expected.label
        assert np.array_equal(np.asarray(sample["image"]), expected.image)
    assert client.sample(7, MODEL, "val")["split"] == "val"
    with pytest.raises(ValueError):
        client.sample(7, MODEL, domain="digit-circle")


def test_activations_match_the_python_api(client, tmp_path):
    image = get_domain("digit-circle").sample(7).image
    local = run(load_checkpoint(SHIPPED), image)
    by_numpy = client.activations(MODEL, image=image)  # numpy goes out as nested lists
    assert by_numpy["activations"] == local.records()
    assert by_numpy["tokens"] == local.tokens
    assert by_numpy["probabilities"] == pytest.approx(local.probabilities)
    png = tmp_path / "seven.png"
    Image.fromarray((image * 255).astype(np.uint8)).save(png)
    by_path = client.activations(MODEL, file=png)
    by_tuple = client.activations(MODEL, file=("x.png", png.read_bytes(), "image/png"))
    assert by_path == by_tuple == by_numpy
    npy = io.BytesIO()
    np.save(npy, image[5:-5, 5:-5].astype(np.float32))
    padded = client.activations(MODEL, file=("x.npy", npy.getvalue(), "application/octet-stream"),
                                fit="pad", dense=True)
    assert np.asarray(padded["dense"]).shape == (10, 100, 100)
    batch = client.activations_batch(MODEL, [image, image.tolist()])["results"]
    assert [r["activations"] for r in batch] == [local.records()] * 2
    with pytest.raises(ValueError):
        client.activations(MODEL)


def test_analysis_intervene_channels(client):
    sample = get_domain("digit-circle").sample(7)
    by_seed = client.analysis(MODEL, seed=7)
    assert {m["status"] for m in by_seed["motifs"]} == {"hit"}
    by_image = client.analysis(MODEL, image=sample.image,
                               motifs=[m.to_dict() for m in sample.motifs], label=sample.label)
    assert by_image["motifs"] == by_seed["motifs"] and by_image["label"] == sample.label
    assert client.analysis(MODEL, seed=7, split="val")["motifs"]
    edit = client.intervene(MODEL, seed=7, remove=[{"channel": 5, "row": 16, "col": 39}])
    assert edit["removed"] == 1 and "6" not in edit["after"]["tokens"]
    edit = client.intervene(MODEL, image=sample.image,
                            add=[{"channel": 0, "row": 50, "col": 50, "value": 50.0}])
    assert edit["added"] == 1 and "9" in edit["after"]["tokens"]
    assert len(client.channels(MODEL)["channels"]) == 10
    assert client.channel(MODEL, 5)["symbol"] == "6"


def test_errors_carry_the_service_message(client):
    with pytest.raises(ApiError) as e:
        client.model("no-such-model")
    assert e.value.status == 404 and not e.value.unreachable
    assert e.value.detail.startswith("unknown model 'no-such-model'")
    assert e.value.detail in str(e.value) and e.value.url.endswith("/v1/models/no-such-model")
    with pytest.raises(ApiError, match="expected a 100x100 image, got 2x2") as e:
        client.activations(MODEL, image=[[0, 1], [1, 0]])
    assert e.value.status == 422
    with pytest.raises(ApiError, match=r"422 .*seed"):
        client.analysis(MODEL, seed=-1)
    keyless = Client("http://testserver")
    keyless._session = TestClient(client._session.app)
    with pytest.raises(ApiError, match="401 .*X-API-Key"):
        keyless.models()
