"""The /v1 API in-process (TestClient): every endpoint and its error cases."""

from __future__ import annotations

import base64
import io
import json
import pathlib
import shutil
import struct
import sys
import threading
import time
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from helpers import make_tiny_checkpoint  # noqa: E402

from backend import store as store_module  # noqa: E402
from backend.main import create_app  # noqa: E402
from backend.settings import Settings  # noqa: E402
from sparling_core.analysis import inspect as si  # noqa: E402
from sparling_core.checkpoint import load_checkpoint  # noqa: E402
from sparling_core.domains import digit_circle as dc  # noqa: E402

MAX_BYTES = 300_000
SUMMARY_N = 6


def shared_tiny_checkpoint(tmp_path_factory) -> pathlib.Path:
    """One tiny checkpoint per test session, whichever module asks first."""
    root = tmp_path_factory.getbasetemp() / "shared-checkpoints"
    if not (root / "tiny" / "history.jsonl").exists():  # written last
        make_tiny_checkpoint(root / "tiny")
    return root / "tiny"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """tiny, a copy with NaN metrics, one without metrics, and broken folders."""
    tiny = shared_tiny_checkpoint(tmp_path_factory)
    root = tmp_path_factory.mktemp("backend-checkpoints")
    shutil.copytree(tiny, root / "tiny")
    shutil.copytree(tiny, root / "nan-metrics")
    metrics = json.loads((tiny / "metrics.json").read_text())
    metrics.update(fpe=float("nan"), ce=float("inf"))
    (root / "nan-metrics" / "metrics.json").write_text(json.dumps(metrics))
    with open(root / "nan-metrics" / "history.jsonl", "a") as f:
        f.write(json.dumps({"samples": 99, "loss": float("nan")}) + "\n")
    shutil.copytree(tiny, root / "no-metrics")
    (root / "no-metrics" / "metrics.json").unlink()
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{not json")
    shutil.copy(tiny / "model.safetensors", root / "broken" / "model.safetensors")
    (root / "corrupt-weights").mkdir()
    shutil.copy(tiny / "config.json", root / "corrupt-weights" / "config.json")
    (root / "corrupt-weights" / "model.safetensors").write_bytes(b"\0" * 100)
    (root / ".hidden").mkdir()
    (root / "README.txt").write_text("not a checkpoint")
    return root


def make_client(checkpoints: pathlib.Path, **overrides) -> TestClient:
    options = {"max_upload_bytes": MAX_BYTES, "channel_summary_n": SUMMARY_N} | overrides
    settings = Settings(checkpoints=checkpoints, **options)
    return TestClient(create_app(settings))


@pytest.fixture(scope="module")
def client(checkpoints):
    with make_client(checkpoints) as c:
        yield c


@pytest.fixture(scope="module")
def tiny(checkpoints):
    return load_checkpoint(checkpoints / "tiny")


def image_json(seed: int = 3) -> list[list[int]]:
    return dc.sample(seed).image.tolist()


def close(a, b, rel: float = 1e-6) -> bool:
    """Nested JSON-like equality with a tolerance on floats."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
            a == pytest.approx(b, rel=rel, abs=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], rel) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(close(x, y, rel) for x, y in zip(a, b, strict=True))
    return a == b


def png_bytes(array: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def post_file(client, data: bytes, name: str = "image.png", **params):
    return client.post("/v1/models/tiny/activations", params=params,
                       files={"file": (name, data, "application/octet-stream")})


# --- health, readiness, model list ------------------------------------------------------

def test_health(client):
    r = client.get("/v1/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_ready_lists_models_and_reports_broken_folders(client, checkpoints):
    r = client.get("/v1/ready")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert body["models"] == ["nan-metrics", "no-metrics", "tiny"]
    assert set(body["errors"]) == {"broken", "corrupt-weights"}
    assert "not valid JSON" in body["errors"]["broken"]
    assert "model.safetensors" in body["errors"]["corrupt-weights"]
    assert all(str(checkpoints) not in r for r in body["errors"].values())  # no server paths


def test_ready_is_503_until_a_model_loads(tmp_path):
    (tmp_path / "broken").mkdir()
    with make_client(tmp_path) as c:
        r = c.get("/v1/ready")
        assert r.status_code == 503 and "no checkpoint could be loaded" in r.json()["detail"]
        assert c.get("/v1/health").status_code == 200
        assert c.get("/v1/models").json() == {"models": [], "default": None, "errors": {
            "broken": "broken is not a complete checkpoint: config.json is missing"}}
    with make_client(tmp_path / "missing") as c:
        r = c.get("/v1/ready")
        assert r.status_code == 503 and "does not exist" in r.json()["detail"]


def test_models_are_not_loaded_at_import_or_before_the_lifespan(checkpoints):
    c = make_client(checkpoints)  # no `with`: the lifespan has not run
    assert c.get("/v1/ready").status_code == 503
    assert c.get("/v1/models").status_code == 503


def test_model_list(client, tiny):
    body = client.get("/v1/models").json()
    assert set(body["errors"]) == {"broken", "corrupt-weights"}
    by_id = {m["id"]: m for m in body["models"]}
    assert sorted(by_id) == ["nan-metrics", "no-metrics", "tiny"]
    m = by_id["tiny"]
    assert m["sparsity"] == "mt"
    assert m["density"] == pytest.approx(tiny.meta["density"])
    assert m["samples_seen"] == tiny.meta["samples_seen"]
    assert m["parameters"] == tiny.model.num_parameters()
    assert m["metrics"] == {k: pytest.approx(tiny.metrics[k]) for k in
                            ("fpe", "fne", "ce", "e2ee", "density", "density_ratio", "n")}
    assert by_id["no-metrics"]["metrics"] is None
    nan = by_id["nan-metrics"]["metrics"]
    assert nan["fpe"] is None and nan["ce"] is None and nan["fne"] == m["metrics"]["fne"]


def test_model_detail(client, tiny):
    r = client.get("/v1/models/tiny")
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == "tiny"
    assert body["config"] == tiny.config.to_dict()
    assert body["train"] == tiny.meta["train"]
    assert body["samples_seen"] == tiny.meta["samples_seen"]
    assert body["assignment"] == {c: str(d) for c, d in tiny.metrics["assignment"].items()}
    assert body["domain"] == "digit-circle" and body["assignment_kind"] == "one-to-one"
    assert body["symbols"] == body["vocabulary"] == [str(d) for d in range(10)]
    assert body["confusion"] == tiny.metrics["confusion"]
    assert body["metrics"]["fpe"] == pytest.approx(tiny.metrics["fpe"])
    bare = client.get("/v1/models/no-metrics").json()
    assert bare["metrics"] is None and bare["assignment"] is None
    assert bare["confusion"] is None
    nan = client.get("/v1/models/nan-metrics").json()
    assert nan["metrics"]["fpe"] is None and nan["metrics"]["ce"] is None


def test_model_detail_counts_batched_forwards(client):
    before = client.get("/v1/models/no-metrics").json()["serving"]
    assert before["max_batch"] >= 1 and before["max_wait_ms"] >= 0
    for _ in range(2):
        r = client.post("/v1/models/no-metrics/activations", json={"image": image_json()})
        assert r.status_code == 200
    after = client.get("/v1/models/no-metrics").json()["serving"]
    assert after["images"] == before["images"] + 2
    assert after["forwards"] == before["forwards"] + 2  # one after the other: batches of 1
    assert after["largest"] >= 1 and after["mean_batch"] == after["images"] / after["forwards"]


def test_history(client, tiny):
    r = client.get("/v1/models/tiny/history")
    assert r.status_code == 200
    rows = r.json()["history"]
    assert rows == tiny.history and len(rows) == 3
    assert {"samples", "loss", "accuracy", "density", "realised_density",
            "threshold"} <= set(rows[0])
    nan_rows = client.get("/v1/models/nan-metrics/history").json()["history"]
    assert nan_rows[-1] == {"samples": 99, "loss": None}


@pytest.mark.parametrize("path", [
    "/v1/models/nope", "/v1/models/%2e%2e", "/v1/models/..%2Fbroken",
    "/v1/models/broken", "/v1/models/%2e%2e/history", "/v1/models/..%2f..%2fetc/history",
    "/v1/models/.hidden/channels", "/v1/models/README.txt/history",
])
def test_unknown_models_are_404_with_a_message(client, path):
    r = client.get(path)
    assert r.status_code == 404
    assert r.json()["detail"]


def test_unknown_model_for_posts_is_404(client):
    for path in ("activations", "analysis", "intervene"):
        r = client.post(f"/v1/models/%2e%2e/{path}", json={"seed": 1})
        assert r.status_code == 404 and "unknown model '..'" in r.json()["detail"]


# --- activations ------------------------------------------------------------------------

def test_activations_json(client, tiny):
    image = np.array(image_json(), dtype=np.float32)
    r = client.post("/v1/models/tiny/activations", json={"image": image.tolist()})
    assert r.status_code == 200
    body = r.json()
    expected = si.run_image(tiny.model, image)
    assert body["model"] == "tiny"
    assert (body["height"], body["width"], body["channels"]) == (100, 100, 10)
    assert body["sequence"] == expected["sequence"]
    assert body["probabilities"] == pytest.approx(expected["probabilities"])
    assert body["n_active"] == expected["n_active"] == len(body["activations"])
    assert body["density"] == pytest.approx(expected["density"])
    assert close(body["activations"], expected["activations"])
    assert body["dense"] is None


def test_activations_dense(client):
    r = client.post("/v1/models/tiny/activations", params={"dense": "true"},
                    json={"image": image_json()})
    assert r.status_code == 200
    body = r.json()
    dense = np.array(body["dense"])
    assert dense.shape == (10, 100, 100)
    nonzero = [{"channel": c, "row": y, "col": x, "value": dense[c, y, x]}
               for c, y, x in zip(*np.nonzero(dense), strict=True)]
    assert close(nonzero, body["activations"])


def test_activations_wrong_size_is_422_naming_the_size(client):
    r = client.post("/v1/models/tiny/activations", json={"image": [[0.0] * 90] * 100})
    assert r.status_code == 422
    assert "expected a 100x100 image" in r.json()["detail"]


@pytest.mark.parametrize("fit", ["pad", "resize"])
def test_activations_fit(client, tiny, fit):
    small = (np.random.default_rng(1).random((60, 80)) > 0.8).astype(np.float32)
    r = client.post("/v1/models/tiny/activations", params={"fit": fit},
                    json={"image": small.tolist()})
    assert r.status_code == 200
    expected = si.run_image(tiny.model, si.prepare_image(small, 100, fit))
    assert r.json()["sequence"] == expected["sequence"]
    assert r.json()["n_active"] == expected["n_active"]


@pytest.mark.parametrize("body, status", [
    ({"image": [[0.0, 2.0]]}, 422),
    ({"image": [[0.0, -1.0]]}, 422),
    ({"image": [[0.0, 1.0], [1.0]]}, 422),
    ({"image": []}, 422),
    ({"image": [[]]}, 422),
    ({"image": "abc"}, 422),
    ({"picture": [[0]]}, 422),
    ([1, 2], 422),
])
def test_activations_bad_json(client, body, status):
    r = client.post("/v1/models/tiny/activations", params={"fit": "pad"}, json=body)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


@pytest.mark.parametrize("content", [b"", b"{", b'{"image": [[NaN, 1]]}',
                                     b'{"image": [[1e999]]}', b"\xff\xfe"])
def test_activations_malformed_json(client, content):
    r = client.post("/v1/models/tiny/activations", params={"fit": "pad"}, content=content,
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"]


@pytest.mark.parametrize("path", ["activations/batch", "analysis", "intervene"])
@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe", b"[]", b"null"])
def test_malformed_json_bodies_are_4xx(client, path, content):
    r = client.post(f"/v1/models/tiny/{path}", content=content,
                    headers={"content-type": "application/json"})
    assert r.status_code in (400, 422) and r.json()["detail"]


def test_activations_bad_query(client):
    r = client.post("/v1/models/tiny/activations", params={"fit": "stretch"},
                    json={"image": image_json()})
    assert r.status_code == 422


def test_activations_unsupported_content_type(client):
    r = client.post("/v1/models/tiny/activations", content=b"hello",
                    headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]


def test_activations_png_equals_json(client):
    image = dc.sample(3).image
    by_json = client.post("/v1/models/tiny/activations", json={"image": image.tolist()}).json()
    by_png = post_file(client, png_bytes(image * 255))
    assert by_png.status_code == 200
    assert by_png.json() == by_json
    rgb = np.repeat((image * 255)[..., None], 3, axis=2)
    assert post_file(client, png_bytes(rgb, "RGB")).json() == by_json
    rgba = np.concatenate([rgb, np.full((100, 100, 1), 255, np.uint8)], axis=2)
    assert post_file(client, png_bytes(rgba, "RGBA")).json() == by_json
    grey_levels = np.where(image == 1, 200, 60).astype(np.uint8)  # > 127 is ink
    assert post_file(client, png_bytes(grey_levels)).json() == by_json


def test_activations_jpeg(client):
    image = dc.sample(3).image
    buffer = io.BytesIO()
    Image.fromarray(image * 255, mode="L").save(buffer, format="JPEG", quality=100)
    r = post_file(client, buffer.getvalue(), "image.jpg")
    assert r.status_code == 200 and r.json()["height"] == 100


@pytest.mark.parametrize("array", [
    dc.sample(3).image.astype(np.float32),  # float: > 0.5 is ink
    dc.sample(3).image.astype(np.float64) * 0.9,
    dc.sample(3).image.astype(bool),
    dc.sample(3).image,  # uint8 0 / 1
    dc.sample(3).image * 255,  # uint8 0 / 255
    np.repeat((dc.sample(3).image * 255)[..., None], 3, axis=2),  # RGB
])
def test_activations_npy_equals_json(client, array):
    by_json = client.post("/v1/models/tiny/activations", json={"image": image_json()}).json()
    r = post_file(client, npy_bytes(array), "image.npy")
    assert r.status_code == 200, r.text
    assert r.json() == by_json


def test_activations_upload_with_fit(client, tiny):
    small = (np.random.default_rng(2).random((40, 120)) > 0.7).astype(np.uint8)
    assert post_file(client, png_bytes(small * 255)).status_code == 422
    r = post_file(client, png_bytes(small * 255), fit="resize")
    assert r.status_code == 200
    expected = si.run_image(tiny.model, si.prepare_image(small.astype(np.float32), 100,
                                                         "resize"))
    assert r.json()["sequence"] == expected["sequence"]


def _png_with_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a tiny (truncated) body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def _npy_with_header(shape: tuple, dtype: str = "<f4", extra: bytes = b"") -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + extra


def test_bad_uploads_are_422_never_500(client):
    valid_png = png_bytes(dc.sample(3).image * 255)
    cases = {
        "garbage": b"this is not an image",
        "empty": b"",
        "truncated png": valid_png[: len(valid_png) // 2],
        "png header only": valid_png[:40],
        "corrupt png": valid_png[:60] + b"\0" * 50 + valid_png[110:],
        "jpeg magic only": b"\xff\xd8\xff\xe0" + b"\0" * 20,
        "gif": b"GIF89a" + b"\0" * 30,
        "npy truncated": npy_bytes(np.zeros((100, 100), np.float32))[:-10],
        "npy object": npy_bytes(np.array([[None, 1]], dtype=object)),
        "npy complex": npy_bytes(np.zeros((4, 4), np.complex64)),
        "npy 4-d": npy_bytes(np.zeros((1, 1, 4, 4), np.float32)),
        "npy nan": npy_bytes(np.full((100, 100), np.nan, np.float32)),
        "npy bad header": b"\x93NUMPY\x01\x00\x10\x00{'descr': 'zz'}\n",
        "npy version 9": b"\x93NUMPY\x09\x00" + b"\0" * 20,
        "npy shape lies": _npy_with_header((100, 100), extra=b"\0" * 12),
    }
    for name, data in cases.items():
        r = post_file(client, data)
        assert r.status_code == 422, (name, r.status_code, r.text)
        assert r.json()["detail"], name


def test_decompression_bombs_are_refused_before_decoding(client):
    for width, height in [(3000, 3000), (30_000, 30_000), (2**31 - 1, 2**31 - 1)]:
        r = post_file(client, _png_with_header(width, height))
        assert r.status_code == 413, (width, r.text)
        assert "pixels" in r.json()["detail"]
    r = post_file(client, _npy_with_header((100_000, 100_000)), "bomb.npy")
    assert r.status_code == 413 and "pixels" in r.json()["detail"]


def test_a_real_large_png_is_413(client):
    big = png_bytes(np.zeros((2100, 2100), np.uint8))  # 4.4 M pixels, compresses small
    assert len(big) < MAX_BYTES
    r = post_file(client, big, fit="resize")
    assert r.status_code == 413 and "4410000 pixels" in r.json()["detail"]


def test_multipart_without_file_field(client):
    r = client.post("/v1/models/tiny/activations", data={"image": "x"},
                    files={"other": ("a.png", b"x")})
    assert r.status_code == 422 and "`file`" in r.json()["detail"]


def test_oversized_bodies_are_413(client):
    r = client.post("/v1/models/tiny/activations", content=b"0" * (MAX_BYTES + 1),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413 and str(MAX_BYTES) in r.json()["detail"]
    r = post_file(client, b"\x89PNG\r\n\x1a\n" + b"\0" * MAX_BYTES)
    assert r.status_code == 413


def test_oversized_chunked_body_is_413(client):
    def chunks():
        for _ in range(10):
            yield b" " * (MAX_BYTES // 5)
    r = client.post("/v1/models/tiny/activations", content=chunks(),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_batch(client, tiny):
    images = [image_json(s) for s in (1, 2)]
    r = client.post("/v1/models/tiny/activations/batch", json={"images": images})
    assert r.status_code == 200
    results = r.json()["results"]
    stacked = np.array(images, dtype=np.float32)
    expected = si.run_images(tiny.model, stacked, batch_invariant=True, motif_batch=1)
    assert results == [{"model": "tiny"} | e for e in expected]  # every float
    # and the library's default decoder, on each image alone, agrees up to float rounding
    default = [si.run_images(tiny.model, image[None])[0] for image in stacked]
    assert close(results, [{"model": "tiny"} | e for e in default], rel=1e-4)
    singles = [client.post("/v1/models/tiny/activations", json={"image": image}).json()
               for image in images]
    assert results == singles  # the same computation: every float equal


def test_batch_with_fit_and_dense(client):
    r = client.post("/v1/models/tiny/activations/batch", params={"fit": "pad", "dense": True},
                    json={"images": [[[1.0]], [[0.0, 1.0]]]})
    assert r.status_code == 200
    assert [np.array(x["dense"]).shape for x in r.json()["results"]] == [(10, 100, 100)] * 2


@pytest.mark.parametrize("body", [
    {"images": []},
    {"images": [[[0.0]]] * 33},
    {"images": [[[0.0]], [[5.0]]]},
    {"image": [[0.0]]},
])
def test_batch_errors(client, body):
    r = client.post("/v1/models/tiny/activations/batch", params={"fit": "pad"}, json=body)
    assert r.status_code == 422


def test_batch_wrong_size_is_422(client):
    r = client.post("/v1/models/tiny/activations/batch", json={"images": [image_json(),
                                                                          [[0.0]]]})
    assert r.status_code == 422 and "100x100" in r.json()["detail"]


# --- samples ----------------------------------------------------------------------------

def test_sample(client):
    r = client.get("/v1/samples/3")
    assert r.status_code == 200
    body = r.json()
    s = dc.sample(3)
    assert body["seed"] == 3 and body["label"] == [str(d) for d in s.label]
    assert body["domain"] == "digit-circle" and (body["height"], body["width"]) == (100, 100)
    assert body["image"] == s.image.tolist()
    assert body["motifs"] == [{"symbol": str(m.digit), "center": list(m.center),
                               "box": list(m.box)} for m in s.motifs]
    assert client.get("/v1/domains/digit-circle/samples/3").json() == body
    assert client.get("/v1/models/tiny/samples/3").json() == body
    png = Image.open(io.BytesIO(base64.b64decode(body["png_base64"])))
    np.testing.assert_array_equal(np.asarray(png) > 127, s.image == 1)


@pytest.mark.parametrize("seed, status", [
    (0, 200), (2**32 - 1, 200), (-1, 422), (2**32, 422), ("abc", 422), ("1.5", 422),
])
def test_sample_seed_range(client, seed, status):
    assert client.get(f"/v1/samples/{seed}").status_code == status


# --- analysis ---------------------------------------------------------------------------

def test_analysis_by_seed(client, tiny):
    r = client.post("/v1/models/tiny/analysis", json={"seed": 3})
    assert r.status_code == 200
    body = r.json()
    s = dc.sample(3)
    c2d = si.parse_assignment(tiny.metrics["assignment"], 10)
    label = [str(d) for d in s.label]
    expected = si.analyze(tiny.model, s.image.astype(np.float32), s.motifs, c2d, label)
    assert close(body, expected)
    assert body["label"] == label
    assert [d["symbol"] for d in body["motifs"]] == [str(m.digit) for m in s.motifs]
    for d in body["motifs"]:
        assert d["status"] in ("hit", "missed", "confused")
        if d["status"] == "hit":
            assert str(c2d[d["channel"]]) == d["symbol"]
        if d["status"] == "confused":
            assert str(c2d.get(d["channel"])) != d["symbol"]
        if d["status"] == "missed":
            assert d["channel"] is None


def test_analysis_by_image_equals_by_seed(client):
    s = dc.sample(3)
    by_seed = client.post("/v1/models/tiny/analysis", json={"seed": 3}).json()
    body = {"image": s.image.tolist(), "motifs": [{"symbol": str(m.digit), "box": list(m.box)}
                                                  for m in s.motifs]}
    by_image = client.post("/v1/models/tiny/analysis", json=body).json()
    assert by_image["label"] is None
    assert by_image == by_seed | {"label": None}
    label = [str(d) for d in s.label]
    with_label = client.post("/v1/models/tiny/analysis", json=body | {"label": label})
    assert with_label.json() == by_seed
    # the API before domains: integer digits and labels mean their strings
    legacy = {"image": s.image.tolist(), "label": s.label,
              "motifs": [{"digit": m.digit, "box": list(m.box)} for m in s.motifs]}
    assert client.post("/v1/models/tiny/analysis", json=legacy).json() == by_seed


def test_analysis_without_checkpoint_assignment(client, tiny):
    s = dc.sample(5)
    body = client.post("/v1/models/no-metrics/analysis", json={"seed": 5}).json()
    expected = si.analyze(tiny.model, s.image.astype(np.float32), s.motifs, None,
                          [str(d) for d in s.label])
    assert close(body, expected)


def test_analysis_rates_are_percentages(client):
    body = client.post("/v1/models/tiny/analysis", json={"seed": 7}).json()
    predicted = sum(d["status"] != "missed" for d in body["motifs"])
    fp = len(body["false_positives"])
    assert body["fpe"] == pytest.approx(100 * fp / (predicted + fp))
    assert body["fne"] == pytest.approx(100 * (len(body["motifs"]) - predicted)
                                        / len(body["motifs"]))


def test_analysis_with_no_motifs_gives_null_rates(client):
    r = client.post("/v1/models/tiny/analysis",
                    json={"image": [[0.0] * 100] * 100, "motifs": []})
    assert r.status_code == 200
    body = r.json()
    assert body["fne"] is None and body["ce"] is None and body["motifs"] == []


@pytest.mark.parametrize("body", [
    {},
    {"seed": 3, "image": [[0.0]]},
    {"image": [[0.0] * 100] * 100},  # motifs missing
    {"seed": 3, "motifs": []},
    {"seed": -1},
    {"seed": 2**32},
    {"image": [[0.0] * 50] * 50, "motifs": []},  # wrong size
    {"image": [[0.0] * 100] * 100, "motifs": [{"digit": 10, "box": [0, 0, 5, 5]}]},
    {"image": [[0.0] * 100] * 100, "motifs": [{"digit": 1, "box": [0, 0, 5]}]},
    {"image": [[0.0] * 100] * 100, "motifs": [{"symbol": "x", "box": [0, 0, 5, 5]}]},
    {"seed": 3, "extra": 1},
])
def test_analysis_errors(client, body):
    r = client.post("/v1/models/tiny/analysis", json=body)
    assert r.status_code == 422, r.text


# --- channels ---------------------------------------------------------------------------

READY = {"wait": 60}  # wait for channel summaries still being computed


def test_channels(client, tiny):
    r = client.get("/v1/models/tiny/channels", params=READY)
    assert r.status_code == 200
    assert r.json()["status"] == "ready"
    assert r.json()["progress"] == {"done": SUMMARY_N, "total": SUMMARY_N}
    channels = r.json()["channels"]
    c2d = si.parse_assignment(tiny.metrics["assignment"], 10)
    expected = si.channel_summaries(tiny.model, SUMMARY_N, assignment=c2d)
    assert [c["channel"] for c in channels] == list(range(10))
    for got, want in zip(channels, expected, strict=True):
        assert set(got) == {"channel", "symbol", "density", "histogram", "median",
                            "precision", "effect"}
        assert got["symbol"] == want["symbol"]
        assert got["effect"] == want["effect"] and got["effect"]["n"] == SUMMARY_N
        assert got["precision"] == pytest.approx(want["precision"])
        assert got["density"] == pytest.approx(want["density"])
        assert got["histogram"]["counts"] == want["histogram"]["counts"]
        assert got["histogram"]["edges"] == pytest.approx(want["histogram"]["edges"])
    assert {str(c["channel"]): c["symbol"] for c in channels} == {
        c: str(d) for c, d in tiny.metrics["assignment"].items()}


def test_channel_detail(client):
    listed = client.get("/v1/models/tiny/channels", params=READY).json()["channels"]
    for c in (0, 9):
        r = client.get(f"/v1/models/tiny/channels/{c}", params=READY)
        assert r.status_code == 200
        body = r.json()
        assert {k: body[k] for k in listed[c]} == listed[c]
        assert 0 < len(body["top_crops"]) <= 12
        assert len(body["middle_crops"]) <= 8 and len(body["outside_crops"]) <= 8
        for crop in body["middle_crops"] + body["outside_crops"]:
            assert set(crop) == {"seed", "row", "col", "value", "crop", "crop_origin"}
        crop = body["top_crops"][0]
        r0, c0 = crop["crop_origin"]
        image = np.array(client.get(f"/v1/samples/{crop['seed']}").json()["image"])
        rows, cols = np.array(crop["crop"]).shape
        np.testing.assert_array_equal(crop["crop"], image[r0 : r0 + rows, c0 : c0 + cols])


@pytest.mark.parametrize("channel, status", [(10, 404), (-1, 422), ("x", 422)])
def test_channel_detail_errors(client, channel, status):
    r = client.get(f"/v1/models/tiny/channels/{channel}", params=READY)
    assert r.status_code == status and r.json()["detail"]


def _counting_summaries(monkeypatch, release: threading.Event | None = None) -> list:
    """Count the store's channel_summaries calls (n of each); with `release`, each call
    reports its first batch, then waits for it before finishing."""
    calls = []
    real = store_module.channel_summaries

    def counting(model, n, *args, progress=None, **kwargs):
        calls.append(n)
        if release is not None:
            progress(1, n)
            assert release.wait(30)
        return real(model, n, *args, progress=progress, **kwargs)

    monkeypatch.setattr(store_module, "channel_summaries", counting)
    return calls


def test_channel_summaries_are_computed_once(checkpoints, monkeypatch):
    calls = _counting_summaries(monkeypatch)
    with make_client(checkpoints, channel_summary_n=2, precompute_channels=False) as c:
        results = []

        def get():
            results.append(c.get("/v1/models/tiny/channels", params=READY).json())

        threads = [threading.Thread(target=get) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert c.get("/v1/models/tiny/channels/3").status_code == 200
    assert calls == [2]  # n = SPARLING_CHANNEL_SUMMARY_N, computed once
    assert len(results) == 4 and all(r == results[0] for r in results)


def test_channels_report_progress_while_computing(checkpoints, monkeypatch):
    """Without the start-up precompute, the first request starts the work and is answered
    202 with the progress at once; polls do not start it again; then the payload."""
    release = threading.Event()
    calls = _counting_summaries(monkeypatch, release)
    try:
        with make_client(checkpoints, channel_summary_n=3, precompute_channels=False) as c:
            first = c.get("/v1/models/tiny/channels")
            assert first.status_code == 202
            assert first.json()["status"] == "computing"
            assert first.json()["progress"]["total"] == 3
            detail = c.get("/v1/models/tiny/channels/2")
            assert detail.status_code == 202 and detail.json()["status"] == "computing"
            for _ in range(100):  # the worker thread reports its first batch
                if c.get("/v1/models/tiny/channels").json()["progress"]["done"] == 1:
                    break
                release.wait(0.05)
            r = c.get("/v1/models/tiny/channels")
            assert (r.status_code, r.json()["progress"]) == (202, {"done": 1, "total": 3})
            assert c.get("/v1/models/tiny/channels/99").status_code == 404  # not waited for
            release.set()
            ready = c.get("/v1/models/tiny/channels", params=READY)
            assert ready.status_code == 200 and len(ready.json()["channels"]) == 10
            assert ready.json()["progress"] == {"done": 3, "total": 3}
            assert c.get("/v1/models/tiny/channels/2").status_code == 200
            assert calls == [3]  # tiny only: the other models were never asked for
    finally:
        release.set()


def test_channels_are_precomputed_at_start_up(checkpoints, monkeypatch):
    """With the precompute on, every loaded model is summarised once in the background,
    the default model first, and a request then finds them ready without computing."""
    order = []
    real = store_module.channel_summaries

    def recording(model, n, *args, **kwargs):
        order.append(kwargs["run"].__self__.lock)  # the model's: looked up below
        return real(model, n, *args, **kwargs)

    monkeypatch.setattr(store_module, "channel_summaries", recording)
    with make_client(checkpoints, channel_summary_n=2, precompute_channels=True,
                     default_model="no-metrics") as c:
        store = c.app.state.store
        store._precompute.join(120)
        assert not store._precompute.is_alive()
        ids = {id(m.lock): m.id for m in store.models.values()}
        order = [ids[id(lock)] for lock in order]
        assert order[0] == "no-metrics" and sorted(order) == sorted(store.models)
        r = c.get("/v1/models/tiny/channels")  # no wait: ready already
        assert r.status_code == 200 and r.json()["progress"] == {"done": 2, "total": 2}
    assert len(order) == len(store.models)  # nothing computed twice


def test_stopping_the_server_stops_the_summaries(checkpoints, monkeypatch):
    """Leaving the app (lifespan shutdown) stops a computation mid-way: no thread is left."""
    release = threading.Event()
    _counting_summaries(monkeypatch, release)
    with make_client(checkpoints, channel_summary_n=3, precompute_channels=True) as c:
        store = c.app.state.store
        for _ in range(200):  # the precompute has started on its first model
            if any(m.summary_progress[0] for m in store.models.values()):
                break
            release.wait(0.05)
        # the computation goes on to its next batch once released, sees the stop and ends
        threading.Timer(0.5, release.set).start()
        started = time.monotonic()
    assert time.monotonic() - started < 20  # shutdown did not wait for the 30 s timeout
    assert not store._precompute.is_alive()
    for loaded in store.models.values():
        assert loaded._summary_thread is None or not loaded._summary_thread.is_alive()


# --- interventions ----------------------------------------------------------------------

def test_intervene_remove_everything(client, tiny):
    on = client.post("/v1/models/tiny/activations", json={"image": image_json()}).json()
    remove = [{k: a[k] for k in ("channel", "row", "col")} for a in on["activations"]]
    big = 0
    while len(json.dumps({"seed": 3, "remove": remove[big:]})) > MAX_BYTES:
        big += 1000  # keep under the body limit
    r = client.post("/v1/models/tiny/intervene", json={"seed": 3, "remove": remove[big:]})
    assert r.status_code == 200
    body = r.json()
    assert close(body["before"], {"sequence": on["sequence"], "tokens": on["tokens"],
                                  "probabilities": on["probabilities"]})
    assert body["removed"] == len(remove) - big and body["added"] == 0
    assert len(body["activations_after"]) == big


def test_intervene_takes_activations_back_as_they_came(client):
    on = client.post("/v1/models/tiny/activations", json={"image": image_json()}).json()
    r = client.post("/v1/models/tiny/intervene",
                    json={"seed": 3, "remove": on["activations"][:3]})
    assert r.status_code == 200 and r.json()["removed"] == 3


def test_intervene_add(client):
    r = client.post("/v1/models/tiny/intervene", json={
        "image": image_json(), "remove": [{"channel": 0, "row": 0, "col": 0}] * 2,
        "add": [{"channel": 2, "row": 40, "col": 60, "value": 7.25}]})
    assert r.status_code == 200
    body = r.json()
    assert body["added"] == 1 and body["removed"] <= 1
    assert {"channel": 2, "row": 40, "col": 60, "value": 7.25} in body["activations_after"]
    assert not any((a["channel"], a["row"], a["col"]) == (0, 0, 0)
                   for a in body["activations_after"])
    assert set(body["after"]) == {"sequence", "tokens", "probabilities"}


@pytest.mark.parametrize("body", [
    {"seed": 3, "remove": [{"channel": 10, "row": 0, "col": 0}]},
    {"seed": 3, "remove": [{"channel": 0, "row": 100, "col": 0}]},
    {"seed": 3, "remove": [{"channel": 0, "row": 0, "col": -1}]},
    {"seed": 3, "add": [{"channel": 0, "row": 0, "col": 100, "value": 1.0}]},
    {"seed": 3, "add": [{"channel": 0, "row": 0, "col": 0, "value": 0.0}]},
    {"seed": 3, "add": [{"channel": 0, "row": 0, "col": 0}]},
    {"seed": 3, "image": [[0.0]]},
    {"remove": []},
    {"image": [[0.0] * 10] * 10},
])
def test_intervene_errors(client, body):
    r = client.post("/v1/models/tiny/intervene", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


def test_intervene_out_of_range_message(client):
    r = client.post("/v1/models/tiny/intervene",
                    json={"seed": 3, "add": [{"channel": 0, "row": 0, "col": 100, "value": 1}]})
    assert "col in 0..99" in r.json()["detail"]


# --- API key, CORS, settings ------------------------------------------------------------

def test_api_key(checkpoints):
    with make_client(checkpoints, api_key="s3cret") as c:
        assert c.get("/v1/health").status_code == 200
        assert c.get("/v1/ready").status_code == 200
        for method, path in [("get", "/v1/models"), ("get", "/v1/models/tiny"),
                             ("get", "/v1/models/tiny/history"), ("get", "/v1/samples/1"),
                             ("get", "/v1/models/tiny/channels"),
                             ("get", "/v1/models/tiny/channels/0"),
                             ("post", "/v1/models/tiny/activations"),
                             ("post", "/v1/models/tiny/activations/batch"),
                             ("post", "/v1/models/tiny/analysis"),
                             ("post", "/v1/models/tiny/intervene"),
                             ("get", "/v1/models/nope")]:
            assert getattr(c, method)(path).status_code == 401, path
            r = getattr(c, method)(path, headers={"X-API-Key": "wrong"})
            assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
        assert c.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
        r = c.post("/v1/models/tiny/analysis", json={"seed": 1},
                   headers={"X-API-Key": "s3cret"})
        assert r.status_code == 200
        assert c.get("/v1/models/nope", headers={"X-API-Key": "s3cret"}).status_code == 404


def test_cors(checkpoints):
    with make_client(checkpoints, cors_origins=["http://localhost:8501"]) as c:
        r = c.options("/v1/models", headers={"Origin": "http://localhost:8501",
                                             "Access-Control-Request-Method": "GET"})
        assert r.headers["access-control-allow-origin"] == "http://localhost:8501"
        r = c.get("/v1/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARLING_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("SPARLING_PORT", "8123")
    monkeypatch.setenv("SPARLING_CORS_ORIGINS", "http://a.example, http://b.example")
    monkeypatch.setenv("SPARLING_API_KEY", "k")
    monkeypatch.setenv("SPARLING_MAX_UPLOAD_BYTES", "1234")
    monkeypatch.setenv("SPARLING_CHANNEL_SUMMARY_N", "7")
    s = Settings()
    assert (s.checkpoints, s.port, s.api_key, s.max_upload_bytes, s.channel_summary_n) == (
        tmp_path, 8123, "k", 1234, 7)
    assert s.cors_origins == ["http://a.example", "http://b.example"]
    monkeypatch.setenv("SPARLING_CORS_ORIGINS", '["http://c.example"]')
    monkeypatch.setenv("SPARLING_API_KEY", "")
    s = Settings()
    assert s.cors_origins == ["http://c.example"] and s.api_key is None
    monkeypatch.delenv("SPARLING_CORS_ORIGINS")
    monkeypatch.delenv("SPARLING_API_KEY")
    assert Settings().cors_origins == [] and Settings().host == "127.0.0.1"


def test_openapi_docs(client):
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ["/v1/health", "/v1/ready", "/v1/models", "/v1/models/{model_id}",
                 "/v1/models/{model_id}/history", "/v1/models/{model_id}/activations",
                 "/v1/models/{model_id}/activations/batch", "/v1/samples/{seed}",
                 "/v1/domains", "/v1/domains/{domain}/samples/{seed}",
                 "/v1/models/{model_id}/samples/{seed}",
                 "/v1/models/{model_id}/analysis", "/v1/models/{model_id}/channels",
                 "/v1/models/{model_id}/channels/{channel}",
                 "/v1/models/{model_id}/intervene"]:
        assert path in paths, path
    body = paths["/v1/models/{model_id}/activations"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}


# --- serving never changes the model ----------------------------------------------------

def _state_bytes(model) -> dict[str, bytes]:
    return {k: v.cpu().numpy().tobytes() for k, v in model.state_dict().items()}


def test_serving_leaves_weights_thresholds_and_batchnorm_byte_identical(checkpoints):
    with make_client(checkpoints, channel_summary_n=2) as c:
        loaded = c.app.state.store.models
        before = {name: _state_bytes(m.model) for name, m in loaded.items()}
        image = image_json(4)
        png = png_bytes(np.array(image, np.uint8) * 255)
        for i in range(3):
            for name in loaded:
                base = f"/v1/models/{name}"
                assert c.get(base).status_code == 200
                assert c.get(f"{base}/history").status_code == 200
                assert c.post(f"{base}/activations", json={"image": image},
                              params={"dense": i == 0}).status_code == 200
                assert post_file(c, png).status_code == 200
                assert c.post(f"{base}/activations", params={"fit": "resize"},
                              json={"image": [[1.0, 0.0], [0.0, 1.0]]}).status_code == 200
                assert c.post(f"{base}/activations/batch",
                              json={"images": [image, image]}).status_code == 200
                assert c.post(f"{base}/analysis", json={"seed": i}).status_code == 200
                assert c.get(f"{base}/channels", params=READY).status_code == 200
                assert c.get(f"{base}/channels/{i}", params=READY).status_code == 200
                assert c.post(f"{base}/intervene", json={
                    "seed": i, "remove": [{"channel": 0, "row": 5, "col": 5}],
                    "add": [{"channel": 1, "row": 6, "col": 6, "value": 3.0}]}
                ).status_code == 200
                assert c.post(f"{base}/activations", json={"image": [[9.0]]}).status_code == 422
        assert c.get("/v1/models").status_code == 200
        assert c.get("/v1/samples/9").status_code == 200
        after = {name: _state_bytes(m.model) for name, m in loaded.items()}
        assert after == before
        assert all(not m.model.training for m in loaded.values())
        assert all(not p.requires_grad or p.grad is None
                   for m in loaded.values() for p in m.model.parameters())


def test_a_model_of_another_image_size(tmp_path):
    """Sizes come from the model's config: 64x64 here, so DigitCircle seeds do not fit."""
    from helpers import tiny_config

    from sparling_core.checkpoint import save_checkpoint
    from sparling_core.models.sparling import SparlingModel

    save_checkpoint(tmp_path / "small", SparlingModel(tiny_config(image_size=64)).eval())
    with make_client(tmp_path) as c:
        r = c.post("/v1/models/small/activations", json={"image": [[0.0] * 64] * 64})
        assert r.status_code == 200 and (r.json()["height"], r.json()["width"]) == (64, 64)
        r = c.post("/v1/models/small/activations", json={"image": image_json()})
        assert r.status_code == 422 and "expected a 64x64 image" in r.json()["detail"]
        r = c.post("/v1/models/small/activations", params={"fit": "resize"},
                   json={"image": image_json()})
        assert r.status_code == 200 and len(r.json()["activations"]) == r.json()["n_active"]
        assert c.post("/v1/models/small/analysis", json={"seed": 1}).status_code == 422
        assert c.post("/v1/models/small/intervene", json={"seed": 1}).status_code == 422
        r = c.get("/v1/models/small/channels", params=READY)
        assert r.status_code == 409 and "64x64" in r.json()["detail"]


def test_activations_warn_when_the_image_was_padded_or_resized(client):
    small = [[0.0] * 60 for _ in range(40)]
    padded = client.post("/v1/models/tiny/activations?fit=pad", json={"image": small}).json()
    assert any("40x60" in w and "padded" in w and "100x100" in w for w in padded["warnings"])
    resized = client.post("/v1/models/tiny/activations?fit=resize",
                          json={"image": small}).json()
    assert any("resized" in w for w in resized["warnings"])
    exact = client.post("/v1/models/tiny/activations",
                        json={"image": [[0.0] * 100] * 100}).json()
    assert not any("fit=" in w for w in exact["warnings"])
    assert exact["empty_map"]["tokens"] and exact["ink_fraction"] == 0.0
