"""The Streamlit frontend, headless: page logic with AppTest against a fake backend client,
and the HTTP client against a small local HTTP server.

    .venv/bin/python -m pytest tests/test_frontend_apptest.py
"""

from __future__ import annotations

import ast
import base64
import io
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `import frontend` without installing the package
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from frontend import api_client as api  # noqa: E402
from frontend.app_pages import _common as ui  # noqa: E402

APP = str(ROOT / "frontend" / "streamlit_app.py")
TIMEOUT = 30
H = W = 100


# --- a fake backend that follows the REST contract ------------------------------------------
def _image(seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return (rng.random((H, W)) < 0.1).astype(int).tolist()


# Four digits placed in sample 7; channel c is assigned to digit (c + 1) % 10.
_MOTIFS = [{"symbol": "2", "center": [20, 50], "box": [14, 46, 26, 54]},
           {"symbol": "5", "center": [50, 80], "box": [44, 76, 56, 85]},
           {"symbol": "7", "center": [80, 50], "box": [74, 46, 86, 54]},
           {"symbol": "9", "center": [50, 20], "box": [44, 16, 56, 24]}]
_ACTIVE = [{"channel": 1, "row": 20, "col": 50, "value": 1.5},  # digit 2: hit
           {"channel": 4, "row": 50, "col": 80, "value": 0.8},  # digit 5: confused
           {"channel": 6, "row": 80, "col": 50, "value": 2.0},  # digit 7: hit
           {"channel": 3, "row": 5, "col": 5, "value": 0.3}]  # false positive; 9 is missed
MAPPING = {str(c): str((c + 1) % 10) for c in range(10)}
MAPPING["4"], MAPPING["3"] = "4", "5"  # channel 4 fires on digit 5 but is assigned to 4


class FakeClient:
    """Answers like the backend, records the calls, and can be switched off."""

    def __init__(self, models=("alpha", "beta")):
        self.default = None
        self.warnings: list[str] = []
        self.down = False
        self.calls: list[tuple] = []
        self.model_ids = list(models)
        self.computing: tuple[int, int] | None = None  # channel summaries: (done, total)

    def _check(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))
        if self.down:
            raise api.ApiError("Cannot reach the backend at http://fake:1 (connection failed "
                               "for GET /v1/models). Is it running?", url="http://fake:1/v1/models")

    def models(self):
        self._check("models")
        return {"models": [{"id": m, "domain": "digit-circle", "sparsity": 0.99,
                            "density": 1e-2, "samples_seen": 24,
                            "parameters": 1000, "metrics": None} for m in self.model_ids],
                "default": self.default,
                "errors": {"broken": "model.safetensors is missing"}}

    def model(self, model_id):
        self._check("model", model_id)
        confusion = np.diag([50] * 10)
        confusion[5, 4] = 7
        return {"id": model_id, "config": {}, "train": {}, "samples_seen": 24, "density": 0.01,
                "metrics": {"fpe": 1.25, "fne": 0.5, "ce": 2.0, "e2ee": 3.5, "density": 6e-5,
                            "density_ratio": 1.34, "n": 200, "exact_match_accuracy": 81.0,
                            "missed_by_symbol": [0] * 9 + [11]},
                "domain": "digit-circle", "vocabulary": [str(d) for d in range(10)],
                "symbols": [str(d) for d in range(10)], "assignment_kind": "one-to-one",
                "assignment": MAPPING, "confusion": confusion.tolist()}

    def history(self, model_id):
        self._check("history", model_id)
        return {"history": [{"samples": 20_000 * (i + 1), "loss": 2.0 / (i + 1),
                             "accuracy": min(1.0, 0.1 * i), "density": 0.5 * 0.75**i,
                             "realised_density": 0.4 * 0.75**i, "threshold": 1.0,
                             "resampled": [[2, 8, 3]] if i == 5 else [[2, -1, 3]] if i == 7
                             else [], "wall_s": 60.0 * (i + 1),
                             # rows written before the loop recorded where it ran have none
                             **({"device": "cpu", "threads": 2, "world_size": 1}
                                if i >= 6 else {})}
                            for i in range(12)]}

    def channels(self, model_id, wait=None):
        self._check("channels", model_id, wait=wait)
        if self.computing is not None:
            done, total = self.computing
            return {"status": "computing", "progress": {"done": done, "total": total}}
        return {"status": "ready", "progress": {"done": 6, "total": 6},
                "channels": [{"channel": c, "symbol": MAPPING[str(c)],
                              "density": 5e-5 + c * 1e-6,
                              "histogram": {"edges": [0, 0.5, 1, 1.5, 2],
                                            "counts": [3, 5, 2, 1]},
                              "median": 0.75, "precision": 0.8 if c != 3 else None,
                              "effect": {"changed": c, "n": 6}} for c in range(10)]}

    def channel(self, model_id, channel, wait=None):
        self._check("channel", model_id, channel, wait=wait)
        body = self.channels(model_id)
        if body["status"] == "computing":
            return body
        info = body["channels"][channel]
        crop = [[int((r + c) % 3 == 0) for c in range(15)] for r in range(15)]

        def crops(first_seed, n):
            return [{"seed": first_seed + i, "row": 40 + i, "col": 30, "value": 2 - i / 10,
                     "crop": crop, "crop_origin": [33 + i, 23]} for i in range(n)]

        return {**info, "top_crops": crops(100, 6), "middle_crops": crops(200, 3),
                "outside_crops": crops(300, 2)}

    def domains(self):
        self._check("domains")
        return {"domains": [{"name": "digit-circle", "description": "digits on a circle",
                             "label_rule": "the digits by increasing angle, smallest first",
                             "image_shape": [H, W], "vocabulary": [str(d) for d in range(10)],
                             "max_label_length": 6, "symbols": [str(d) for d in range(10)],
                             "assignment": "one-to-one", "motif_channels": 10,
                             "has_motifs": True, "splits": {}}]}

    def sample(self, seed, model_id=None, split="train"):
        self._check("sample", seed)
        return {"domain": "digit-circle", "split": split, "seed": seed, "height": H,
                "width": W, "image": _image(seed), "png_base64": "",
                "label": ["2", "5", "7", "9"], "motifs": _MOTIFS}

    def activations(self, model_id, *, image=None, file=None, fit="none", dense=False):
        self._check("activations", model_id, fit=fit, has_file=file is not None)
        if file is not None and not file[1]:
            raise api.ApiError("The backend answered 400 to POST /v1/models/x/activations: "
                               "cannot decode the uploaded image", url="http://fake:1", status=400)
        return {"model": model_id, "height": H, "width": W, "channels": 10,
                "activations": _ACTIVE, "n_active": len(_ACTIVE), "density": 4e-5,
                "sequence": [2, 5, 7], "tokens": ["2", "5", "7"],
                "probabilities": [0.99, 0.6, 0.95, 0.9], "dense": None,
                "warnings": list(self.warnings), "ink_fraction": 0.2,
                "empty_map": {"sequence": [5, 9, 7], "tokens": ["5", "9", "7"],
                              "probabilities": [0.5, 0.5, 0.5, 0.5]}}

    def analysis(self, model_id, *, seed=None, image=None, motifs=None):
        self._check("analysis", model_id, seed=seed)
        found = [{"symbol": "2", "box": _MOTIFS[0]["box"], "status": "hit", "channel": 1,
                  "value": 1.5, "row": 20, "col": 50},
                 {"symbol": "5", "box": _MOTIFS[1]["box"], "status": "confused", "channel": 4,
                  "value": 0.8, "row": 50, "col": 80},
                 {"symbol": "7", "box": _MOTIFS[2]["box"], "status": "hit", "channel": 6,
                  "value": 2.0, "row": 80, "col": 50},
                 {"symbol": "9", "box": _MOTIFS[3]["box"], "status": "missed",
                  "channel": None, "value": None, "row": None, "col": None}]
        return {"sequence": [2, 5, 7], "tokens": ["2", "5", "7"],
                "probabilities": [0.99, 0.6, 0.95, 0.9],
                "label": ["2", "5", "7", "9"], "motifs": found, "assignment": MAPPING,
                "false_positives": [{"channel": 3, "row": 5, "col": 5, "value": 0.3}],
                "fpe": 25.0, "fne": 25.0, "ce": 33.3, "n_active": 4, "density": 4e-5}

    def intervene(self, model_id, *, seed=None, image=None, remove=None, add=None):
        self._check("intervene", model_id, seed=seed, remove=remove, add=add)
        gone = {(r["channel"], r["row"], r["col"]) for r in remove or []}
        after = [a for a in _ACTIVE if (a["channel"], a["row"], a["col"]) not in gone]
        after += list(add or [])
        sequence = [2, 5, 7] if not gone else [5, 7]
        if add:
            sequence = sorted(set(sequence) | {int(MAPPING[str(a["channel"])]) for a in add})
        return {"before": {"sequence": [2, 5, 7], "tokens": ["2", "5", "7"],
                           "probabilities": [0.99, 0.6, 0.95, 0.9]},
                "after": {"sequence": sequence, "tokens": [str(t) for t in sequence],
                          "probabilities": [0.8] * (len(sequence) + 1)},
                "removed": len(gone), "added": len(add or []), "activations_after": after}


@pytest.fixture
def fake(monkeypatch):
    client = FakeClient()
    monkeypatch.setattr(api, "get_client", lambda: client)
    st.cache_data.clear()
    api.forget_last_good()
    yield client
    st.cache_data.clear()
    api.forget_last_good()


def run_page(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    if page:
        at.switch_page(f"app_pages/{page}.py")
        at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    """Everything written on the page, as one string."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in at.error] + [w.value for w in at.warning]
    parts += [i.value for i in at.info] + [s.value for s in at.success]
    parts += [t.value for t in at.title] + [s.value for s in at.subheader]
    parts += [f"{m.label}={m.value}" for m in at.metric]
    parts += [w.value for w in at.sidebar.warning]
    return "\n".join(str(p) for p in parts)


def figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def as_array(value) -> np.ndarray:
    """A plotly JSON array: a plain list, or a typed array {"dtype", "bdata", "shape"}."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        if isinstance(shape, str):
            shape = [int(n) for n in shape.split(",")]
        return flat.reshape(shape) if shape else flat
    return np.asarray(value)


def marker_traces(fig: dict) -> dict[str, dict]:
    return {t["name"]: t for t in fig["data"] if t.get("type") == "scatter"}


# --- pages ---------------------------------------------------------------------------------
def test_explore_sample_overlay_sequence_and_ground_truth(fake):
    at = run_page()
    assert at.title[0].value == "Explore motifs"
    assert at.sidebar.selectbox(key="model_id").value == "alpha"
    assert "Checkpoint `broken` failed to load" in texts(at)  # errors of /v1/models shown

    (fig,) = figures(at)
    traces = marker_traces(fig)
    # every active motif drawn where it fires, one trace per channel, named with its digit
    assert traces["ch 6 → 7"]["x"] == [50] and traces["ch 6 → 7"]["y"] == [80]
    assert "value" in traces["ch 1 → 2"]["hovertemplate"]
    assert traces["false positive"]["x"] == [5]
    # ground-truth boxes, one per digit, labelled with their status
    labels = sorted(a["text"] for a in fig["layout"]["annotations"])
    assert labels == ["2: hit", "5: confused (ch 4)", "7: hit", "9: missed"]
    assert len(fig["layout"]["shapes"]) == 4
    assert fig["layout"]["yaxis"]["range"][0] > fig["layout"]["yaxis"]["range"][1]  # rows down

    page = texts(at)
    assert "2 5 7" in page and "Ground truth is 2 5 7 9" in page
    assert "4 motifs: 2 hit, 1 confused, 1 missed; 1 false-positive pixels" in page
    confidences = at.dataframe[0].value
    assert list(confidences["token"]) == ["2", "5", "7", "end"]
    assert list(confidences["confidence %"]) == [99.0, 60.0, 95.0, 90.0]
    calls = [c[0] for c in fake.calls]
    assert {"sample", "activations", "analysis", "model"} <= set(calls)


def test_explore_channel_toggles_hide_markers(fake):
    at = run_page()
    at.button_group(key="explore_channels_10").set_value([6]).run()
    traces = marker_traces(figures(at)[0])
    # the false positive is on channel 3: hidden (the box legend entries stay)
    assert {n for n in traces if not n.startswith("box: ")} == {"ch 6 → 7"}


def test_explore_new_seed_asks_backend_again(fake):
    at = run_page()
    at.number_input(key="explore_seed").set_value(42).run()
    assert ("sample", (42,), {}) in fake.calls
    assert ("analysis", ("alpha",), {"seed": 42}) in fake.calls


def test_explore_upload_png(fake):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((np.asarray(_image(3)) * 255).astype(np.uint8)).save(buffer, format="PNG")
    at = run_page()
    at.radio(key="explore_source").set_value("Upload an image").run()
    assert "Upload an image to see its motifs" in texts(at)
    at.file_uploader(key="explore_upload").upload("digits.png", buffer.getvalue(),
                                                 "image/png").run()
    assert not at.exception
    assert ("activations", ("alpha",), {"fit": "pad", "has_file": True}) in fake.calls
    (fig,) = figures(at)
    heatmap = fig["data"][0]
    assert as_array(heatmap["z"]).shape == (H, W) and as_array(heatmap["z"]).max() == 1.0
    assert "Uploads have no ground truth" in texts(at)
    assert "2 5 7" in texts(at)


def test_explore_bad_upload_shows_backend_message(fake):
    at = run_page()
    at.radio(key="explore_source").set_value("Upload an image").run()
    at.file_uploader(key="explore_upload").upload("empty.png", b"", "image/png").run()
    assert not at.exception
    # a refused input: a warning naming the control that fixes it, not an outage with Retry
    warning = next(w.value for w in at.warning if "cannot decode" in w.value)
    assert "Check the uploaded file" in warning and not at.error
    assert not [b for b in at.button if b.label == "Retry"]


def test_backend_down_says_so_and_recovers(fake):
    fake.down = True
    at = run_page()
    error = at.error[0].value
    assert "Cannot reach the backend at http://fake:1" in error
    assert "Backend URL: `http://fake:1/v1/models`" in error
    assert not at.get("plotly_chart")
    at.run()  # still down: no crash, same message
    assert "Cannot reach the backend" in at.error[0].value

    fake.down = False  # back up: the error was not cached, Retry shows the page
    at.button(key="retry-reach the backend").click().run()
    assert not at.exception and not at.error
    assert len(figures(at)) == 1


def test_error_mid_page_names_the_failing_call(fake, monkeypatch):
    def broken(model_id, *, seed=None, image=None, motifs=None):
        raise api.ApiError("The backend answered 500 to POST /v1/models/alpha/analysis: boom",
                           url="http://fake:1/v1/models/alpha/analysis", status=500)

    monkeypatch.setattr(fake, "analysis", broken)
    at = run_page()
    assert "Could not analyse the sample" in at.error[0].value
    assert "boom" in at.error[0].value


@pytest.mark.parametrize("page", [None, "channels", "alignment", "training", "intervene",
                                  "compare"])
def test_every_page_copes_with_no_checkpoints(fake, page):
    fake.model_ids = []
    at = run_page(page)
    assert not at.get("plotly_chart")
    assert "no checkpoints loaded" in texts(at).lower() or "No checkpoint to show" in texts(at)
    assert len(at.sidebar.warning) <= 2  # the failed checkpoint, and "no checkpoints" once


def test_pages_run_on_their_own(fake):
    """Each page also works as a plain script (it renders the checkpoint picker itself)."""
    at = AppTest.from_file(str(ROOT / "frontend" / "app_pages" / "training.py"),
                           default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.sidebar.selectbox(key="model_id").value == "alpha"
    at.sidebar.selectbox(key="model_id").set_value("beta").run()
    at.run()
    assert at.sidebar.selectbox(key="model_id").value == "beta"
    assert ("history", ("beta",), {}) in fake.calls


def test_channels_page(fake):
    at = run_page("channels")
    assert at.title[0].value == "Channels"
    select = at.selectbox(key="channel_pick_alpha")
    select.set_value(6).run()
    page = texts(at)
    assert "Aligned symbol=7" in page and "Precision=80.0%" in page
    assert "Decode changes without it=6 of 6" in page
    assert len(at.image) == 6 + 3 + 2  # top, middle and outside crops
    for heading in ("Top-activating crops", "Middle of the value range",
                    "Firing outside every box"):
        assert heading in page
    assert "(0.75)" in page  # the median, in the middle section's caption
    # every crop links to its image in Explore (the default page, at /)
    links = [m.value for m in at.markdown if "](./?model=" in m.value]
    assert len(links) == 11
    assert "[seed 100](./?model=alpha&seed=100)" in links[0]
    assert any("[seed 301](./?model=alpha&seed=301)" in link for link in links)
    table = at.dataframe[0].value
    assert list(table["precision"][:4]) == ["80.0%", "80.0%", "80.0%", "—"]
    assert list(table["decode changes"][:2]) == ["0 of 6", "1 of 6"]
    (hist,) = figures(at)
    assert hist["data"][0]["type"] == "bar" and hist["data"][0]["y"] == [3, 5, 2, 1]
    assert ("channel", ("alpha", 6), {"wait": 0}) in fake.calls


def test_channels_page_shows_progress_while_computing(fake):
    fake.computing = (120, 500)
    at = run_page("channels")
    (bar,) = at.get("progress")
    assert bar.proto.value == 24  # percent
    assert "120 of 500 validation images" in bar.proto.text
    assert not at.get("selectbox") or not any(
        s.key == "channel_pick_alpha" for s in at.selectbox)
    assert not any(c[0] == "channel" for c in fake.calls)  # no detail asked for yet
    fake.computing = (400, 500)
    at.button(key="channels_check_again").click().run()  # the progress is never cached
    assert "400 of 500" in at.get("progress")[0].proto.text
    fake.computing = None
    at.button(key="channels_check_again").click().run()
    assert not at.exception and not at.get("progress")
    assert at.selectbox(key="channel_pick_alpha").value == 0
    assert "Middle of the value range" in texts(at)


def test_channels_zip_names_crops_by_kind(fake, monkeypatch):
    import zipfile

    sent = []
    real = st.download_button

    def recording(label, data, *args, **kwargs):
        sent.append(data)
        return real(label, data, *args, **kwargs)

    monkeypatch.setattr(st, "download_button", recording)
    run_page("channels")  # (after Explore, whose PNG export is also a download button)
    (data,) = [d for d in sent if isinstance(d, bytes) and d[:2] == b"PK"]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        listed = json.loads(archive.read("crops.json"))
    assert sum(n.startswith("channel0-top-") for n in names) == 6
    assert sum(n.startswith("channel0-middle-") for n in names) == 3
    assert "channel0-outside-01-seed301.png" in names
    assert {k: len(v) for k, v in listed.items()} == {
        "top_crops": 6, "middle_crops": 3, "outside_crops": 2}


def test_alignment_page_shows_paper_numbers(fake):
    at = run_page("alignment")
    table = at.dataframe[0].value
    row = table.set_index("metric").loc["E2EE: end-to-end error (%)"]
    assert row["This checkpoint (alpha)"] == "3.50"
    assert row["Paper: Sparling MT"] == "0.74" and row["Paper: ST ablation"] == "2.11"
    ce = table.set_index("metric").loc["CE: confusion error (%)"]
    assert ce["Paper: Sparling MT"] == "1.16" and ce["Paper: ST ablation"] == "22.19"
    density = table.set_index("metric").loc["Density (eval mode)"]
    assert density["Paper: Sparling MT"] == "5.02e-05"
    exact = table.set_index("metric").loc["Exact-match accuracy (%)"]
    assert exact["This checkpoint (alpha)"] == "81.00"
    (fig,) = figures(at)
    heat = fig["data"][0]
    columns = list(heat["x"])
    assert heat["type"] == "heatmap" and heat["z"][5][columns.index("ch 4")] == 7
    assert len(fig["layout"]["shapes"]) == 10  # the assignment, outlined
    # columns follow the assignment, so the outlined cells run down the diagonal
    assert columns[:10] == ["ch 9", "ch 0", "ch 1", "ch 2", "ch 4", "ch 3", "ch 5", "ch 6",
                            "ch 7", "ch 8"]
    assert columns[-1] == "missed" and heat["z"][9][-1] == 11
    at.radio(key="alignment_scale").set_value("row").run()
    (fig,) = figures(at)
    row5 = fig["data"][0]["z"][5]
    assert sum(row5) == pytest.approx(100) and fig["data"][0]["customdata"][5][
        columns.index("ch 4")] == 7


def test_alignment_page_without_metrics(fake, monkeypatch):
    original = fake.model
    monkeypatch.setattr(fake, "model", lambda m: {**original(m), "metrics": None,
                                                  "confusion": None, "channel_to_digit": None})
    at = run_page("alignment")
    assert "has not been evaluated yet" in at.warning[0].value
    assert not at.get("plotly_chart")


def test_training_page(fake):
    at = run_page("training")
    (fig,) = figures(at)
    names = {t.get("name") for t in fig["data"]}
    assert {"target density", "realised density", "validation accuracy", "training loss"} <= names
    assert fig["layout"]["yaxis"]["type"] == "log"
    assert "Samples seen=240,000" in texts(at)
    (marks,) = [t for t in fig["data"] if t.get("name") == "channel resampled"]
    assert marks["x"] == [120_000, 160_000] and marks["y"] == pytest.approx([0.5, 0.7])
    assert "channel 2 (a copy of channel 8) re-initialised for token 3" in marks["hovertext"][0]
    assert "had not learned it" in marks["hovertext"][1]
    assert any("120,000 samples: channel 2" in c.value for c in at.caption)
    assert any("last segment: 12.0 min on cpu, 2 threads, 1 process(es)" in c.value
               for c in at.caption)


def test_model_choice_carries_across_pages(fake):
    at = run_page()
    at.sidebar.selectbox(key="model_id").set_value("beta").run()
    at.switch_page("app_pages/training.py").run()
    assert ("history", ("beta",), {}) in fake.calls
    at.switch_page("app_pages/compare.py").run()  # no sidebar picker on Compare
    at.switch_page("app_pages/channels.py").run()
    assert at.sidebar.selectbox(key="model_id").value == "beta"


def test_explorer_opens_on_the_default_model(fake):
    fake.model_ids = ["ablation-kl-0.1", "ablation-st", "digit-circle-mt"]
    fake.default = "digit-circle-mt"
    at = run_page()
    assert at.sidebar.selectbox(key="model_id").value == "digit-circle-mt"
    assert at.query_params["model"] == "digit-circle-mt"
    at = run_page("compare")  # Compare: the default model against its closest ablation
    assert at.selectbox(key="compare_left").value == "digit-circle-mt"
    assert at.selectbox(key="compare_right").value == "ablation-st"


def test_url_state_round_trip(fake):
    """?model=beta&seed=7 opens Explore on beta with seed 7; a change is written back."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["model"] = "beta"
    at.query_params["seed"] = "7"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.sidebar.selectbox(key="model_id").value == "beta"
    assert at.number_input(key="explore_seed").value == 7
    assert ("sample", (7,), {}) in fake.calls
    at.number_input(key="explore_seed").set_value(9).run()
    assert at.query_params["seed"] == "9" and at.query_params["model"] == "beta"
    at.sidebar.selectbox(key="model_id").set_value("alpha").run()
    assert at.query_params["model"] == "alpha"
    link = [c.value for c in at.sidebar.code]
    assert link and "model=alpha" in link[0] and "seed=9" in link[0]
    # the Channels page reads ?channel= and writes it back
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["channel"] = "4"
    at.run()
    at.switch_page("app_pages/channels.py")
    at.run()
    assert at.selectbox(key="channel_pick_alpha").value == 4
    assert at.query_params["channel"] == "4"
    # a malformed parameter is ignored, not an error
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["model"] = "no-such-model"
    at.query_params["seed"] = "-3"
    at.run()
    assert not at.exception and at.sidebar.selectbox(key="model_id").value == "alpha"
    assert at.number_input(key="explore_seed").value == 0


def test_explore_shows_why_a_decode_is_doubtful(fake):
    fake.warnings = ["The decoder emitted 5 tokens from 2 active motifs: at least 3 token(s) "
                     "are not backed by a motif."]
    at = run_page()
    assert any("not backed by a motif" in w.value for w in at.warning)
    assert "for an empty map the decoder answers **5 9 7**" in texts(at)


def test_compare_page_two_checkpoints_same_seed(fake):
    at = run_page("compare")
    assert at.selectbox(key="compare_left").value == "alpha"
    assert at.selectbox(key="compare_right").value == "beta"
    at.number_input(key="compare_seed").set_value(9).run()
    assert len(figures(at)) == 2
    assert ("analysis", ("alpha",), {"seed": 9}) in fake.calls
    assert ("analysis", ("beta",), {"seed": 9}) in fake.calls


def test_intervene_remove_and_add(fake):
    at = run_page("intervene")
    assert "Nothing edited yet" in texts(at)
    remove = at.multiselect(key="intervene_remove_alpha_0")
    remove.set_value([(1, 20, 50)]).run()
    call = [c for c in fake.calls if c[0] == "intervene"][-1]
    assert call[2]["remove"] == [{"channel": 1, "row": 20, "col": 50}] and call[2]["add"] == []
    assert "The decoded sequence changed: 2 5 7 → 5 7" in texts(at)
    traces = marker_traces(figures(at)[0])
    assert traces["removed"]["x"] == [50] and "ch 1 → 2" not in traces

    at.toggle(key="intervene_add").set_value(True).run()
    at.selectbox(key="intervene_channel").set_value(8).run()
    at.slider(key="intervene_row").set_value(33).run()
    at.slider(key="intervene_col").set_value(44).run()
    at.button(key="intervene_add_one").click().run()
    call = [c for c in fake.calls if c[0] == "intervene"][-1]
    assert call[2]["add"] == [{"channel": 8, "row": 33, "col": 44, "value": 2.0}]
    assert marker_traces(figures(at)[0])["added"]["x"] == [44]
    assert "5 7 9" in texts(at)


def test_intervene_several_additions_truth_boxes_and_token_diff(fake):
    at = run_page("intervene")
    fig = figures(at)[0]
    # the ground-truth boxes of the sample are on the map, labelled with their symbol
    assert len(fig["layout"]["shapes"]) == 4
    assert sorted(a["text"] for a in fig["layout"]["annotations"]) == ["2", "5", "7", "9"]
    assert "How a digit-circle label is read off the image: the digits by increasing " \
           "angle" in texts(at)
    at.toggle(key="intervene_add").set_value(True).run()
    for channel, row in ((8, 30), (0, 60)):
        at.selectbox(key="intervene_channel").set_value(channel).run()
        at.slider(key="intervene_row").set_value(row).run()
        at.button(key="intervene_add_one").click().run()
    call = [c for c in fake.calls if c[0] == "intervene"][-1]
    assert [(a["channel"], a["row"]) for a in call[2]["add"]] == [(8, 30), (0, 60)]
    assert marker_traces(figures(at)[0])["added"]["y"] == [30, 60]
    # before 2 5 7, after the fake's sorted union with digits 9 and 1: 1 2 5 7 9
    diff = at.dataframe[-1].value
    assert list(diff["change"]) == ["added", "kept", "kept", "kept", "added"]
    assert list(diff["after"]) == ["1", "2", "5", "7", "9"]
    at.button(key="intervene_clear").click().run()
    assert "Nothing edited yet" in texts(at)


def test_colours_follow_symbols_and_legend_is_always_shown(fake):
    at = run_page()
    fig = figures(at)[0]
    assert fig["layout"]["showlegend"] is True
    traces = marker_traces(fig)
    # channel 1 is assigned to symbol "2": it wears symbol 2's colour, not channel 1's
    assert traces["ch 1 → 2"]["marker"]["color"] == ui.SYMBOL_COLOURS[2]
    assert traces["ch 6 → 7"]["marker"]["color"] == ui.SYMBOL_COLOURS[7]
    assert {"box: hit", "box: confused", "box: missed"} <= set(traces)  # boxes explained
    greys = {"#7f7f7f", "#9a9a9a", "#222a2a", "#778aae", "#b2828d"}
    assert not greys & {c.lower() for c in ui.SYMBOL_COLOURS}
    # both sides of Compare colour a symbol alike
    at = run_page("compare")
    left, right = (marker_traces(f) for f in figures(at))
    assert left["ch 6 → 7"]["marker"]["color"] == right["ch 6 → 7"]["marker"]["color"]
    # toggles: silent channels say so, and every toggle is tinted with its channel's colour
    at = run_page()
    options = [o.content if hasattr(o, "content") else str(o)
               for o in at.button_group(key="explore_channels_10").proto.options]
    assert sum("silent here" in o for o in options) == 6  # channels 1, 3, 4, 6 fire
    assert ui.SYMBOL_COLOURS[7] in "".join(str(h.proto) for h in at.get("html"))


def test_shapes_tell_apart_channels_sharing_a_symbol():
    mapping = {0: "x", 1: "y", 2: "x", 3: "x"}
    assert [ui.channel_shape(c, mapping) for c in range(4)] == [
        "circle", "circle", "square", "diamond"]
    assert ui.channel_colour(0, mapping, ["x", "y"]) == ui.channel_colour(2, mapping, ["x", "y"])
    assert ui.channel_colour(1, mapping, ["x", "y"]) != ui.channel_colour(0, mapping, ["x", "y"])
    assert ui.channel_shape(9, mapping) == "circle"  # unassigned


def test_overlapping_markers_shrink(fake, monkeypatch):
    fig = ui.motif_figure(None, 20, 20, [{"channel": 0, "row": 5, "col": 5, "value": 1.0},
                                         {"channel": 1, "row": 5, "col": 5, "value": 1.0}])
    sizes = [as_array(t["marker"]["size"]).tolist() for t in fig.to_dict()["data"]
             if t.get("type") == "scatter" and t["name"].startswith("ch")]
    assert sizes[0][0] > sizes[1][0] > 0


def test_figure_png_draws_markers_boxes_and_legend():
    from PIL import Image

    mapping = {3: "5"}
    png = ui.figure_png(np.zeros((20, 30)), 20, 30,
                        [{"channel": 3, "row": 10, "col": 10, "value": 1.0}],
                        mapping=mapping, symbols=[str(d) for d in range(10)],
                        motifs=[{"symbol": "5", "box": [2, 20, 8, 28], "status": "missed"}],
                        scale=4)
    picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert picture.shape[1] == 120 and picture.shape[0] > 80  # the legend below the image
    hexed = "#{:02x}{:02x}{:02x}".format(*picture[42, 42])
    assert hexed == ui.SYMBOL_COLOURS[5].lower()  # the dot, in symbol 5's colour
    assert tuple(picture[8, 100]) == (0xd7, 0x19, 0x1c)  # the missed box's top edge
    assert tuple(picture[0, 0]) == (255, 255, 255)


def test_exports_include_png(fake):
    at = run_page()
    keys = [b.proto.id for b in at.get("download_button")]
    assert any("explore_export_png" in k for k in keys)


def test_cached_data_with_a_badge_while_the_backend_is_down(fake):
    at = run_page()
    assert len(figures(at)) == 1 and "cached data" not in texts(at)
    fake.down = True
    st.cache_data.clear()  # as if the TTLs had run out
    at.run()
    assert not at.exception and not at.error
    assert len(figures(at)) == 1  # the last good answers
    badge = "\n".join(m.value for m in at.sidebar.markdown)
    assert "Backend unreachable: showing cached data from" in badge
    fake.down = False
    at.run()
    assert "Backend unreachable" not in "\n".join(m.value for m in at.sidebar.markdown)


# --- the HTTP client -----------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _reply(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.seen.append({"method": self.command, "path": self.path,
                          "key": self.headers.get("X-API-Key"),
                          "type": self.headers.get("Content-Type", ""),
                          "body": self.rfile.read(length)})

    def do_GET(self):  # noqa: N802
        self._record()
        if self.path == "/v1/health":
            self._reply(200, {"status": "ok"})
        elif self.path == "/v1/models/nope":
            self._reply(404, {"detail": "no checkpoint named 'nope'"})
        elif self.path == "/v1/ready":
            self._reply(503, {"detail": "no checkpoints loaded"})
        else:
            self._reply(200, {"models": [], "errors": {}})

    def do_POST(self):  # noqa: N802
        self._record()
        if self.path.startswith("/v1/models/m/analysis"):
            self._reply(422, {"detail": [{"loc": ["body", "seed"], "msg": "must be >= 0"}]})
        else:
            self._reply(200, {"ok": True})


@pytest.fixture
def server():
    _Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_client_sends_api_key_and_decodes_json(server):
    client = api.SparlingClient(server + "/", api_key="s3cret")
    assert client.health() == {"status": "ok"}
    assert _Handler.seen[-1]["key"] == "s3cret"
    assert api.SparlingClient(server).models() == {"models": [], "errors": {}}
    assert _Handler.seen[-1]["key"] is None


def test_client_errors_carry_status_detail_and_url(server):
    client = api.SparlingClient(server)
    with pytest.raises(api.ApiError) as e:
        client.model("nope")
    assert e.value.status == 404 and not e.value.unreachable
    assert "no checkpoint named 'nope'" in str(e.value)
    assert e.value.url == f"{server}/v1/models/nope"
    with pytest.raises(api.ApiError, match="503.*no checkpoints loaded"):
        client.ready()
    with pytest.raises(api.ApiError, match=r"422.*body\.seed: must be >= 0"):
        client.analysis("m", seed=1)


def test_client_unreachable_backend():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(api.ApiError, match=f"Cannot reach the backend at {url}") as e:
        api.SparlingClient(url, timeout=2).models()
    assert e.value.unreachable


def test_client_activations_json_and_multipart(server):
    client = api.SparlingClient(server)
    client.activations("m", image=[[0.0, 1.0]], fit="pad")
    seen = _Handler.seen[-1]
    assert seen["path"] == "/v1/models/m/activations?dense=false&fit=pad"
    assert json.loads(seen["body"]) == {"image": [[0.0, 1.0]]}
    client.activations("m", file=("x.png", b"\x89PNG...", "image/png"))
    seen = _Handler.seen[-1]
    assert seen["type"].startswith("multipart/form-data")
    assert b'name="file"; filename="x.png"' in seen["body"] and b"\x89PNG..." in seen["body"]
    with pytest.raises(ValueError):
        client.activations("m")
    client.intervene("m", seed=3, remove=[{"channel": 1, "row": 2, "col": 3}])
    assert json.loads(_Handler.seen[-1]["body"]) == {
        "seed": 3, "remove": [{"channel": 1, "row": 2, "col": 3}], "add": []}


def test_client_reads_url_and_key_from_environment(monkeypatch):
    monkeypatch.setenv("SPARLING_API_URL", "http://backend:8000/")
    monkeypatch.setenv("SPARLING_API_KEY", "k")
    api.get_client.clear()
    try:
        client = api.get_client()
        assert client.base_url == "http://backend:8000"
        assert client._session.headers["X-API-Key"] == "k"
    finally:
        api.get_client.clear()


# --- the frontend talks HTTP only ----------------------------------------------------------
def test_frontend_never_imports_torch_or_the_library():
    for path in (ROOT / "frontend").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in {"torch", "sparling_core", "backend"}, (
                    f"{path.relative_to(ROOT)} imports {name}")
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import frontend.api_client, "
            "frontend.app_pages._common; "
            "bad = [m for m in ('torch', 'sparling_core', 'backend') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
