"""The Domain seam holds: a domain defined here, in the test suite, goes through training,
evaluation, the REST API and the explorer's page logic with no change to library code.

ToyShapes: up to three of the symbols A, B, C (3x3 stamps) on a 16 x 24 canvas (not
square); the answer is the symbols from left to right.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from backend.main import create_app  # noqa: E402
from backend.settings import Settings  # noqa: E402
from sparling_core.analysis.evaluate import evaluate  # noqa: E402
from sparling_core.checkpoint import load_checkpoint  # noqa: E402
from sparling_core.domains import Domain, Motif, Sample, get_domain, register  # noqa: E402
from sparling_core.models.sparling import ModelConfig  # noqa: E402
from sparling_core.training.loop import TrainConfig, train  # noqa: E402

STAMPS = {
    "A": np.array([[0, 1, 0], [1, 1, 1], [1, 0, 1]]),
    "B": np.array([[1, 1, 0], [1, 1, 1], [1, 1, 0]]),
    "C": np.array([[1, 1, 1], [1, 0, 0], [1, 1, 1]]),
}


class ToyShapes(Domain):
    name = "toy-shapes"
    description = "A, B and C on a 16 x 24 canvas, read left to right"
    image_shape = (16, 24)
    vocabulary = ("A", "B", "C")
    max_label_length = 3
    min_label_length = 1
    symbols = ("A", "B", "C")
    assignment = "one-to-one"
    motif_channels = 3

    def sample(self, seed: int, split: str = "train") -> Sample:
        rng = np.random.default_rng(seed)
        image = np.zeros(self.image_shape, dtype=np.uint8)
        n = int(rng.integers(1, 4))
        columns = sorted(rng.choice(np.arange(1, 21, 4), size=n, replace=False))
        motifs = []
        for col in columns:
            symbol = str(rng.choice(self.symbols))
            row = int(rng.integers(1, 12))
            image[row:row + 3, col:col + 3] = STAMPS[symbol]
            motifs.append(Motif(symbol, (row + 1, int(col) + 1), (row, int(col), row + 3,
                                                                  int(col) + 3)))
        return Sample(seed, image, [m.symbol for m in motifs], motifs)

    def split_range(self, split: str) -> range:
        self.check_split(split)
        start = {"train": 0, "val": 10_000, "test": 20_000}[split]
        return range(start, start + 10_000)

    def theoretical_min_density(self, channels: int | None = None) -> float:
        return 2.0 / ((channels or 3) * 16 * 24)


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory) -> Path:
    domain = register(ToyShapes())
    folder = tmp_path_factory.mktemp("toy") / "checkpoints" / "toy"
    model = ModelConfig(**{**domain.model_config_overrides(), "domain": domain.name,
                           "decoder": "points", "max_points": 8, "motif_width": 8,
                           "motif_layers": 2, "d_model": 16, "n_heads": 2,
                           "encoder_layers": 1, "decoder_layers": 1, "initial_density": 0.05})
    config = TrainConfig(out=str(folder), model=model, batch_size=16, lr=3e-3,
                         max_samples=160, val_every=64, val_size=16, bf16=False,
                         channels_last=False, threads=1, seed=0)
    train(config, progress=False)
    checkpoint = load_checkpoint(folder)
    report = evaluate(checkpoint.model, n=24, batch_size=8)
    (folder / "metrics.json").write_text(__import__("json").dumps(report))
    return folder


def test_training_and_evaluation(toy_checkpoint):
    ckpt = load_checkpoint(toy_checkpoint)
    assert ckpt.config.domain == "toy-shapes" and ckpt.config.image_shape == (16, 24)
    assert ckpt.meta["samples_seen"] >= 160 and len(ckpt.history) >= 2
    report = evaluate(ckpt.model, n=24, batch_size=8)
    assert report["domain"] == "toy-shapes" and report["n"] == 24
    assert report["symbols"] == ["A", "B", "C"]
    assert np.asarray(report["confusion"]).shape == (3, 3)
    domain = get_domain("toy-shapes")
    motifs = sum(len(domain.sample(s).motifs) for s in domain.split_range("test")[:24])
    assert report["digits"] == motifs  # every ground-truth motif was aligned
    for key in ("fpe", "fne", "ce", "e2ee", "density", "density_ratio"):
        assert key in report


def test_decoded_tokens_come_from_the_vocabulary(toy_checkpoint):
    ckpt = load_checkpoint(toy_checkpoint)
    images, _ = get_domain("toy-shapes").batch(
        [get_domain("toy-shapes").sample(s) for s in range(4)])
    decoded = ckpt.model.generate(images)
    assert decoded.motifs.shape == (4, 3, 16, 24)
    for seq in decoded.sequences:
        assert 1 <= len(seq) <= 3 and all(0 <= t < 3 for t in seq)
    with pytest.raises(ValueError, match=r"\(N, 1, 16, 24\)"):
        ckpt.model.generate(torch.zeros(1, 1, 24, 16))


@pytest.fixture(scope="module")
def client(toy_checkpoint):
    app = create_app(Settings(checkpoints=toy_checkpoint.parent, channel_summary_n=8))
    with TestClient(app) as c:
        yield c


def test_rest_api_serves_the_toy_domain(client):
    domains = {d["name"]: d for d in client.get("/v1/domains").json()["domains"]}
    assert domains["toy-shapes"]["image_shape"] == [16, 24]
    assert domains["toy-shapes"]["symbols"] == ["A", "B", "C"]
    assert "digit-circle" in domains
    models = client.get("/v1/models").json()
    assert models["models"][0]["domain"] == "toy-shapes" and models["default"] == "toy"
    detail = client.get("/v1/models/toy").json()
    assert detail["vocabulary"] == ["A", "B", "C"]
    assert set(detail["assignment"].values()) <= {"A", "B", "C"}

    sample = client.get("/v1/domains/toy-shapes/samples/5").json()
    expected = ToyShapes().sample(5)
    assert sample["label"] == expected.label and (sample["height"], sample["width"]) == (16, 24)
    assert sample["motifs"] == [m.to_dict() for m in expected.motifs]
    assert client.get("/v1/models/toy/samples/5").json() == sample

    run = client.post("/v1/models/toy/activations", json={"image": sample["image"]}).json()
    assert (run["height"], run["width"], run["channels"]) == (16, 24, 3)
    assert all(t in ("A", "B", "C") for t in run["tokens"])
    analysis = client.post("/v1/models/toy/analysis", json={"seed": 5}).json()
    assert [m["symbol"] for m in analysis["motifs"]] == expected.label
    assert analysis["label"] == expected.label
    channels = client.get("/v1/models/toy/channels", params={"wait": 60}).json()["channels"]
    assert len(channels) == 3 and all(c["symbol"] in (None, "A", "B", "C") for c in channels)
    crops = client.get("/v1/models/toy/channels/0", params={"wait": 60}).json()["top_crops"]
    assert all(10_000 <= c["seed"] < 10_008 for c in crops)  # the domain's validation seeds
    edit = client.post("/v1/models/toy/intervene", json={
        "seed": 5, "add": [{"channel": 1, "row": 15, "col": 23, "value": 3.0}]}).json()
    assert {"channel": 1, "row": 15, "col": 23, "value": 3.0} in edit["activations_after"]
    assert client.post("/v1/models/toy/analysis", json={
        "image": sample["image"], "motifs": [{"symbol": "Z", "box": [0, 0, 3, 3]}]}
    ).status_code == 422
    assert client.get("/v1/domains/no-such-domain/samples/1").status_code == 404


def test_explorer_pages_run_on_the_toy_domain(client, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from frontend import api_client as api

    rest = api.SparlingClient("http://testserver")
    rest._session = client  # the FastAPI TestClient speaks requests' call signature
    monkeypatch.setattr(api, "get_client", lambda: rest)
    st.cache_data.clear()
    try:
        at = AppTest.from_file(str(ROOT / "frontend" / "streamlit_app.py"), default_timeout=60)
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        assert at.sidebar.selectbox(key="model_id").value == "toy"
        page = "\n".join(e.value for e in at.markdown)
        assert "motifs:" in page  # the ground-truth summary of the sample
        assert any("toy-shapes" in str(r.value) for r in at.radio)
        for name in ("alignment", "channels", "intervene"):
            at.switch_page(f"app_pages/{name}.py")
            at.run()
            assert not at.exception, (name, [e.message for e in at.exception])
    finally:
        st.cache_data.clear()
