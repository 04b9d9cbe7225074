"""Your own data: FolderDomain (labels.jsonl + images), `sparling export`, `train --data`,
`evaluate --data`."""

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sparling_core.cli import app
from sparling_core.domains import (
    DigitCircle,
    FolderDomain,
    FolderError,
    get_domain,
    load_folder,
    register,
)
from sparling_core.domains import digit_circle as dc
from sparling_core.domains.folder import export_domain, hashed_split
from sparling_core.models.sparling import ModelConfig

runner = CliRunner()


def png_bytes(array: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


GREY_4x6 = png_bytes(np.arange(24, dtype=np.uint8).reshape(4, 6) * 10)


def make_folder(root: Path, lines: list, images: dict | None = None) -> Path:
    """A data folder: `lines` (dicts, or raw strings written as they are) and `images`
    (name -> PNG bytes or a numpy array saved as .npy); default a.png, b.png: 4x6 grey."""
    root.mkdir(parents=True, exist_ok=True)
    images = {"a.png": GREY_4x6, "b.png": GREY_4x6} if images is None else images
    for name, content in images.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (root / name).write_bytes(content)
        else:
            np.save(root / name, content)
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                   for line in lines)
    (root / "labels.jsonl").write_text(text)
    return root


def ok(image="a.png", label=("x",), **extra) -> dict:
    return {"image": image, "label": list(label), **extra}


# -- every bad input: one FolderError naming labels.jsonl and the line -------------------------

BAD = {
    "not json": ([ok(), "{not json"], None, 2, "not valid JSON"),
    "not an object": ([ok(), "[1, 2]"], None, 2, "expected a JSON object"),
    "missing image": ([ok(), {"label": ["x"]}], None, 2, 'missing field "image"'),
    "missing label": ([ok(), {"image": "a.png"}], None, 2, 'missing field "label"'),
    "empty label": ([ok(), ok(label=())], None, 2, "empty label"),
    "label not a list": ([{"image": "a.png", "label": "xy"}], None, 1, '"label" must be a list'),
    "unknown split": ([ok(split="train"), ok(split="dev")], None, 2, "unknown split 'dev'"),
    "missing image file": ([ok(), ok("c.png")], None, 2, "image c.png does not exist"),
    "not png or npy": ([ok("a.jpg")], None, 1, "neither .png nor .npy"),
    "not a png": ([ok("a.png"), ok("t.png")], {"a.png": GREY_4x6, "t.png": b"hello"}, 2,
                  "not a PNG file"),
    "colour png": ([ok(), ok("rgb.png")],
                   {"a.png": GREY_4x6, "rgb.png": png_bytes(np.zeros((4, 6, 3), np.uint8),
                                                            "RGB")}, 2, "colour (RGB) PNG"),
    "mixed png sizes": ([ok(), ok(), ok("b.png")],
                        {"a.png": GREY_4x6, "b.png": png_bytes(np.zeros((4, 8), np.uint8))},
                        3, "b.png is 4x8 (height x width) but a.png (line 1) is 4x6"),
    "mixed npy size": ([ok(), ok("n.npy")], {"a.png": GREY_4x6, "n.npy": np.zeros((6, 4))},
                       2, "n.npy is 6x4"),
    "npy not 2-D": ([ok("n.npy")], {"n.npy": np.zeros((2, 4, 6))}, 1, "a 2-D array"),
    "odd size": ([ok("o.png")], {"o.png": png_bytes(np.zeros((5, 6), np.uint8))}, 1,
                 "even height and width"),
    "box outside": ([ok(motifs=[]), ok(motifs=[{"symbol": "x", "box": [0, 0, 5, 2]}])], None,
                    2, "box [0, 0, 5, 2] is outside the 4x6 image"),
    "empty box": ([ok(motifs=[{"symbol": "x", "box": [2, 2, 2, 4]}])], None, 1, "or empty"),
    "bad box": ([ok(motifs=[{"symbol": "x", "box": [0, 0, 2]}])], None, 1,
                "motif 0 must be"),
    "motif without symbol": ([ok(motifs=[{"box": [0, 0, 2, 2]}])], None, 1, "motif 0 must be"),
    "motifs on some lines": ([ok(motifs=[]), ok("b.png")], None, 2,
                             'has no "motifs" but line 1 has'),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_one_clear_error(case, tmp_path):
    lines, images, line, message = BAD[case]
    folder = make_folder(tmp_path / "data", lines, images)
    with pytest.raises(FolderError) as e:
        FolderDomain(folder)
    text = str(e.value)
    assert f"{folder.resolve() / 'labels.jsonl'} line {line}: " in text, text
    assert message in text, text
    assert "\n" not in text


def test_bad_folders(tmp_path):
    with pytest.raises(FolderError, match="does not exist"):
        FolderDomain(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FolderError, match="has no labels.jsonl"):
        FolderDomain(tmp_path / "empty")
    make_folder(tmp_path / "blank", ["", "  "])
    with pytest.raises(FolderError, match="has no lines"):
        FolderDomain(tmp_path / "blank")


def test_blank_lines_are_skipped_and_counted(tmp_path):
    folder = make_folder(tmp_path / "d", [ok(split="train"), "", ok("c.png", split="val")])
    with pytest.raises(FolderError, match=r"labels.jsonl line 3: image c.png does not exist"):
        FolderDomain(folder)


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_cli_reports_bad_data_in_one_line(command, tmp_path, trained):
    folder = make_folder(tmp_path / "bad", [ok(label=["1"], split="train"),
                                            ok(label=["2"], split="val"), "{oops"])
    out = tmp_path / "out"
    if command == "train":
        args = ["train", "--data", str(folder), "--out", str(out), "--model-size", "tiny",
                "--max-samples", "4", "--no-progress"]
    else:
        out.mkdir()
        args = ["evaluate", str(trained["checkpoint"]), "--data", str(folder), "--json",
                str(out / "report.json"), "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "labels.jsonl line 3: not valid JSON" in lines[0]
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_train_needs_train_and_val_lines(tmp_path):
    folder = make_folder(tmp_path / "d", [ok(split="train"), ok("b.png", split="test")])
    result = runner.invoke(app, ["train", "--data", str(folder), "--out", str(tmp_path / "o"),
                                 "--model-size", "tiny", "--no-progress"])
    assert result.exit_code == 2
    assert "has no val lines" in result.output
    assert not (tmp_path / "o").exists()
    result = runner.invoke(app, ["train", "--data", str(folder), "--domain", "digit-circle",
                                 "--no-progress"])
    assert result.exit_code == 2 and "give --data or --domain, not both" in result.output


# -- the domain -------------------------------------------------------------------------------

def test_domain_attributes_and_samples(tmp_path):
    ink = np.zeros((4, 6), np.uint8)
    ink[1, 2] = 255
    images = {"a.png": png_bytes(ink), "b.npy": np.full((4, 6), 0.25),
              "c.png": png_bytes(np.full((4, 6), 65535, np.uint16), None)}
    lines = [
        ok("a.png", ["b", "a"], split="train",
           motifs=[{"symbol": "s", "box": [0, 0, 3, 3]}, {"symbol": "r", "box": [1, 1, 4, 6]}]),
        ok("b.npy", ["c"], split="train", motifs=[]),
        ok("c.png", ["a", "a", "a"], split="val", motifs=[{"symbol": "s", "box": [0, 0, 2, 2]}]),
    ]
    d = FolderDomain(make_folder(tmp_path / "d", lines, images))
    assert d.name == f"folder:{(tmp_path / 'd').resolve()}"
    assert d.vocabulary == ("a", "b", "c") and d.symbols == ("r", "s")
    assert d.image_shape == (4, 6) and d.max_label_length == 3 and d.has_motifs
    assert d.motif_channels == 2 and d.assignment_for(2) == "one-to-one"
    assert d.assignment_for(5) == "many-to-one"
    assert [len(d.split_range(s)) for s in ("train", "val", "test")] == [2, 1, 0]
    assert d.theoretical_min_density() == pytest.approx(1 / (2 * 4 * 6))  # (2 + 0) / 2
    assert d.theoretical_min_density(4) == pytest.approx(1 / (4 * 4 * 6))
    assert d.model_config_overrides()["vocabulary"] == ["a", "b", "c"]
    s = d.sample(0, "train")
    assert s.seed == 0 and s.label == ["b", "a"] and s.image.dtype == np.float32
    assert s.image[1, 2] == 1 and s.image.sum() == 1  # pixel / 255, white ink
    assert [(m.symbol, m.box, m.center) for m in s.motifs] == [
        ("s", (0, 0, 3, 3), (1, 1)), ("r", (1, 1, 4, 6), (2, 3))]
    assert np.allclose(d.sample(1, "train").image, 0.25) and d.sample(1).motifs == []
    assert np.allclose(d.sample(0, "val").image, 1.0)  # 16-bit: pixel / 65535
    images, labels = d.batch([d.sample(0), d.sample(1)])
    assert images.shape == (2, 1, 4, 6) and labels == [[1, 0], [2]]
    with pytest.raises(IndexError, match="has 1 val images"):
        d.sample(1, "val")
    with pytest.raises(ValueError, match="split must be one of"):
        d.sample(0, "dev")


def test_without_motifs(tmp_path):
    d = FolderDomain(make_folder(tmp_path / "d", [ok(label=["q", "p"], split="train"),
                                                  ok(label=["p"], split="train")]))
    assert not d.has_motifs and d.symbols == d.vocabulary == ("p", "q")
    assert d.theoretical_min_density() == pytest.approx(1.5 / (2 * 4 * 6))  # mean length


def test_vocabulary_from_the_model(tmp_path):
    folder = make_folder(tmp_path / "d", [ok(label=["b"]), ok(label=["c"])])
    d = FolderDomain(folder, vocabulary=["c", "b", "z"])
    assert d.vocabulary == ("c", "b", "z") and d.token_ids(["b", "z"]) == [1, 2]
    with pytest.raises(FolderError, match=r"line 2: token 'c' is not in the model's"):
        FolderDomain(folder, vocabulary=["b"])


def test_registry_prefix_resolves_and_caches(tmp_path):
    folder = make_folder(tmp_path / "d", [ok()])
    name = f"folder:{folder.resolve()}"
    d = get_domain(name)
    assert d.name == name and get_domain(name) is d
    assert load_folder(folder) is not d and get_domain(name) is not d  # reloaded
    with pytest.raises(FolderError, match="does not exist"):
        get_domain(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="folder:"):
        get_domain("nofolder:/x")


def test_changed_labels_file_is_detected(tmp_path):
    folder = make_folder(tmp_path / "d", [ok(split="train")])
    d = FolderDomain(folder)
    with open(folder / "labels.jsonl", "a") as f:
        f.write(json.dumps(ok("b.png")) + "\n")
    with pytest.raises(FolderError, match="changed since it was indexed"):
        d.sample(0)


def test_model_config_vocabulary():
    assert ModelConfig(vocab_size=2, vocabulary=("a", "b")).vocabulary == ["a", "b"]
    assert ModelConfig().vocabulary is None
    for bad in (["a"], ["a", "a"], ["a", ""]):
        with pytest.raises(ValueError, match="vocabulary must be 2"):
            ModelConfig(vocab_size=2, vocabulary=bad)


# -- the lazy index ---------------------------------------------------------------------------

def test_index_reads_headers_only(tmp_path, monkeypatch):
    """Indexing succeeds on images cut off after their headers and never decodes one;
    sampling such an image fails, naming the file and line."""
    png = png_bytes(np.zeros((8, 10), np.uint8))
    images = {f"i{k}.png": png[:33] for k in range(5)}  # signature + IHDR chunk only
    np.save(tmp_path / "full.npy", np.zeros((8, 10), np.float32))
    header_only = (tmp_path / "full.npy").read_bytes()[:128]  # the 1.0 header is 128 bytes
    lines = [ok(f"i{k}.png") for k in range(5)] + [ok("n.npy")]
    folder = make_folder(tmp_path / "d", lines, images)
    (folder / "n.npy").write_bytes(header_only)

    def forbidden(*args, **kwargs):
        raise AssertionError("indexing decoded an image")

    with monkeypatch.context() as m:
        m.setattr(Image, "open", forbidden)
        m.setattr(np, "load", forbidden)
        d = FolderDomain(folder)
    assert d.image_shape == (8, 10) and len(d) == 6
    split = next(s for s in ("train", "val", "test") if len(d.split_range(s)))
    with pytest.raises(FolderError, match=r"labels.jsonl line \d: image .* cannot be read"):
        d.sample(0, split)


def test_index_is_fast(tmp_path):
    """5,000 lines (distinct files) index in well under a second of CPU (2.9 s CPU for
    100,000 in bench/folder_index.py)."""
    folder = tmp_path / "d"
    (folder / "img").mkdir(parents=True)
    png = png_bytes(np.zeros((10, 10), np.uint8))
    with open(folder / "labels.jsonl", "w") as f:
        for k in range(5000):
            (folder / f"img/{k}.png").write_bytes(png)
            f.write(json.dumps({"image": f"img/{k}.png", "label": ["1", "2"],
                                "motifs": [{"symbol": "1", "box": [0, 0, 4, 4]}]}) + "\n")
    start = time.process_time()
    d = FolderDomain(folder)
    cpu = time.process_time() - start
    print(f"indexed 5000 lines in {cpu:.3f} s CPU")
    assert len(d) == 5000 and cpu < 2.0


# -- the seeded split -------------------------------------------------------------------------

def test_hashed_split_is_90_5_5_and_deterministic():
    splits = [hashed_split(f"images/{k}.png") for k in range(20_000)]
    share = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert abs(share["train"] - 0.90) < 0.01 and abs(share["val"] - 0.05) < 0.007
    assert abs(share["test"] - 0.05) < 0.007
    assert splits == [hashed_split(f"images/{k}.png") for k in range(20_000)]


def test_split_does_not_depend_on_line_order(tmp_path):
    png = png_bytes(np.zeros((4, 4), np.uint8))
    names = [f"img/{k}.png" for k in range(300)]
    images = {n: png for n in names}
    lines = [ok(n, label=[n]) for n in names]
    a = FolderDomain(make_folder(tmp_path / "a", lines, images))
    b = FolderDomain(make_folder(tmp_path / "b", lines[::-1], images))

    def members(d):
        return {s: sorted(d.sample(i, s).label[0] for i in d.split_range(s))
                for s in ("train", "val", "test")}

    assert members(a) == members(b)
    assert all(len(v) for v in members(a).values())
    # within a split, index i is the i-th such line in file order
    firsts = [n for n in names if hashed_split(n) == "val"]
    assert [a.sample(i, "val").label[0] for i in a.split_range("val")] == firsts


def test_explicit_split_wins(tmp_path):
    png = png_bytes(np.zeros((4, 4), np.uint8))
    names = [f"{k}.png" for k in range(20)]
    lines = [ok(n, label=[str(k)], split="test") for k, n in enumerate(names)]
    d = FolderDomain(make_folder(tmp_path / "d", lines, {n: png for n in names}))
    assert len(d.split_range("test")) == 20 and len(d.split_range("train")) == 0
    assert d.sample(7, "test").label == ["7"]


# -- export -----------------------------------------------------------------------------------

def test_export_round_trip(tmp_path):
    out = tmp_path / "dc"
    result = runner.invoke(app, ["export", "--domain", "digit-circle", "--n", "12",
                                 "--first-seed", "40", "--out", str(out), "--mark-split",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    d = FolderDomain(out)
    assert len(d.split_range("train")) == 12 and d.vocabulary == DigitCircle.vocabulary
    for i in range(12):
        got, want = d.sample(i, "train"), dc.sample(40 + i)
        assert np.array_equal(got.image, want.image)
        assert got.label == [str(t) for t in want.label]
        assert [(m.symbol, m.box, m.center) for m in got.motifs] == [
            (str(m.digit), m.box, m.center) for m in want.motifs]
    first = json.loads((out / "labels.jsonl").read_text().splitlines()[0])
    assert first["image"] == "images/40.png" and first["seed"] == 40
    assert first["split"] == "train"


def test_export_refuses_non_empty_out_and_force_replaces(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["export", "--domain", "digit-circle", "--n", "2", "--out", str(out), "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "is not empty; give --force" in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    result = runner.invoke(app, args + ["--force"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["images", "labels.jsonl"]
    assert "split" not in (out / "labels.jsonl").read_text()  # the seeded split applies
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folders left


class _Failing(DigitCircle):
    name = "test-failing-domain"

    def sample(self, seed, split="train"):
        if seed == 3:
            raise ValueError("seed 3 cannot be drawn")
        return super().sample(seed, split)


def test_export_failure_leaves_nothing(tmp_path):
    register(_Failing())
    result = runner.invoke(app, ["export", "--domain", "test-failing-domain", "--n", "5",
                                 "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2 and "seed 3 cannot be drawn" in result.output
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "f").write_text("x")
    with pytest.raises(ValueError, match="seed 3"):
        export_domain(_Failing(), tmp_path / "old", 5, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["old"]
    assert (tmp_path / "old" / "f").read_text() == "x"  # --force keeps the old one on failure


def test_export_range_checked(tmp_path):
    result = runner.invoke(app, ["export", "--domain", "digit-circle", "--n", "2",
                                 "--first-seed", "5", "--split", "test",
                                 "--out", str(tmp_path / "o"), "--no-progress"])
    assert result.exit_code == 2 and "test seeds are" in result.output


# -- the round trip: export, train from the folder, evaluate on its test split ----------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder-roundtrip")
    data, ckpt = root / "data", root / "ckpt"
    result = runner.invoke(app, ["export", "--domain", "digit-circle", "--n", "200",
                                 "--out", str(data), "--no-progress"])
    assert result.exit_code == 0, result.output
    args = ["train", "--data", str(data), "--out", str(ckpt), "--model-size", "tiny",
            "--batch-size", "16", "--val-every", "16", "--val-size", "8", "--threads", "1",
            "--no-progress"]
    result = runner.invoke(app, args + ["--max-samples", "32"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, args + ["--max-samples", "48", "--resume"])
    assert result.exit_code == 0, result.output
    return {"root": root, "data": data, "checkpoint": ckpt, "args": args}


def test_round_trip_checkpoint_names_its_folder(trained):
    meta = json.loads((trained["checkpoint"] / "config.json").read_text())
    model = meta["model"]
    assert model["domain"] == f"folder:{trained['data'].resolve()}"
    assert model["vocabulary"] == [str(d) for d in range(10)] and model["vocab_size"] == 10
    assert model["decoder"] == "points" and model["image_size"] == 100
    assert meta["samples_seen"] == 48  # resumed from 32
    # what the backend needs: the checkpoint's domain name resolves to the folder's samples
    s = get_domain(model["domain"]).sample(0, "test")
    assert s.image.shape == (100, 100) and s.motifs


def test_round_trip_evaluate_on_the_test_split(trained, tmp_path):
    report_path = tmp_path / "report.json"
    result = runner.invoke(app, ["evaluate", str(trained["checkpoint"]), "--data",
                                 str(trained["data"]), "--split", "test", "--json",
                                 str(report_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    for key in ("fpe", "fne", "ce", "e2ee", "density", "density_ratio", "n", "confusion",
                "assignment", "domain", "split", "theoretical_min_density"):
        assert key in report
    test_lines = len(FolderDomain(trained["data"]).split_range("test"))
    assert report["n"] == test_lines > 0 and report["split"] == "test"
    assert report["domain"] == f"folder:{trained['data'].resolve()}"
    assert all(isinstance(report[k], float) for k in ("fpe", "fne", "ce", "e2ee", "density"))


def test_evaluate_on_a_folder_without_motifs(trained, tmp_path):
    """Another folder (no motifs, fewer tokens) read with the checkpoint's vocabulary."""
    lines = [json.loads(t) for t in (trained["data"] / "labels.jsonl").read_text().splitlines()]
    keep = [{"image": str(trained["data"] / ln["image"]), "label": ln["label"], "split": "test"}
            for ln in lines[:6] if "9" not in ln["label"]]
    folder = make_folder(tmp_path / "nomotifs", keep, images={})
    report_path = tmp_path / "r.json"
    result = runner.invoke(app, ["evaluate", str(trained["checkpoint"]), "--data", str(folder),
                                 "--json", str(report_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["fpe"] is None and report["fne"] is None and report["ce"] is None
    assert isinstance(report["e2ee"], float) and isinstance(report["density"], float)
    assert report["n"] == len(keep)
    bad = make_folder(tmp_path / "newtoken", [ok(image=keep[0]["image"], label=["X"])],
                      images={})
    result = runner.invoke(app, ["evaluate", str(trained["checkpoint"]), "--data", str(bad),
                                 "--json", str(tmp_path / "no.json"), "--no-progress"])
    assert result.exit_code == 2 and "line 1: token 'X' is not in the model's" in result.output
    assert not (tmp_path / "no.json").exists()


def test_resume_refuses_a_changed_folder(trained, tmp_path):
    data = trained["data"]
    changed = tmp_path / "changed"
    lines = (data / "labels.jsonl").read_text().splitlines()
    extra = json.loads(lines[0])
    extra["label"] = ["A"] + extra["label"]
    rows = [{**json.loads(t), "image": str(data / json.loads(t)["image"])} for t in lines]
    rows.append({**extra, "image": str(data / extra["image"])})
    make_folder(changed, rows, images={})
    args = [a if a != str(data) else str(changed) for a in trained["args"]]
    result = runner.invoke(app, args + ["--max-samples", "64", "--resume"])
    assert result.exit_code == 2, result.output
    assert "cannot resume" in result.output and "vocabulary" in result.output


def test_round_trip_serve_and_explore(trained, monkeypatch):
    """The folder checkpoint served like any other, its images browsed by index through
    the REST API and looked at in the explorer's page logic."""
    import shutil
    import sys

    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import streamlit as st
    from fastapi.testclient import TestClient
    from streamlit.testing.v1 import AppTest

    from backend.main import create_app
    from backend.settings import Settings
    from frontend import api_client as api

    served = trained["root"] / "served"
    shutil.copytree(trained["checkpoint"], served / "mine", dirs_exist_ok=True)
    with TestClient(create_app(Settings(checkpoints=served, channel_summary_n=4))) as client:
        listed = client.get("/v1/models").json()["models"]
        domain_id = f"folder:{trained['data'].name}"
        assert listed[0]["domain"] == domain_id  # the folder's name, not its server path
        names = [d["name"] for d in client.get("/v1/domains").json()["domains"]]
        assert domain_id in names and not any(str(trained["root"]) in n for n in names)
        expected = get_domain(f"folder:{trained['data'].resolve()}").sample(2, "test")
        by_model = client.get("/v1/models/mine/samples/2?split=test").json()
        assert by_model["label"] == expected.label and by_model["split"] == "test"
        assert client.get(f"/v1/domains/{domain_id}/samples/2?split=test").json() == by_model
        assert client.get("/v1/models/mine/samples/100000?split=test").status_code == 404
        analysis = client.post("/v1/models/mine/analysis",
                               json={"seed": 2, "split": "test"}).json()
        assert [m["symbol"] for m in analysis["motifs"]] == [m.symbol for m in expected.motifs]

        rest = api.SparlingClient("http://testserver")
        rest._session = client
        monkeypatch.setattr(api, "get_client", lambda: rest)
        st.cache_data.clear()
        try:
            at = AppTest.from_file(str(root / "frontend" / "streamlit_app.py"),
                                   default_timeout=120)
            at.run()
            assert not at.exception, [e.message for e in at.exception]
            assert at.sidebar.selectbox(key="model_id").value == "mine"
            assert any(domain_id in str(r.value) for r in at.radio)
            assert "motifs:" in "\n".join(e.value for e in at.markdown)
        finally:
            st.cache_data.clear()


def test_folder_run_script_exports_trains_and_evaluates(tmp_path):
    """scripts/folder_run.sh (issue 14's real run) at toy size: train + val joined in one
    folder, a separate test folder, a checkpoint, its evaluation on the test folder; and a
    second call keeps the exports and resumes."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    data, run = tmp_path / "data", tmp_path / "run"
    env = {**os.environ, "N_TRAIN": "24", "N_VAL": "8", "N_TEST": "6", "MAX_MINUTES": "0.02",
           "THREADS": "1", "SPARLING": str(Path(sys.executable).parent / "sparling")}
    cmd = ["bash", str(root / "scripts/folder_run.sh"), str(data), str(run)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in (data / "train/labels.jsonl").read_text().splitlines()]
    assert [line["split"] for line in lines] == ["train"] * 24 + ["val"] * 8
    assert len(list((data / "train/images").iterdir())) == 32
    assert not [p for p in data.iterdir() if p.name.startswith(".")]  # no half-built folder
    report = json.loads((run / "eval-folder.json").read_text())
    assert report["n"] == 6 and {"e2ee", "fpe", "fne", "ce", "density"} <= set(report)
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["domain"] == f"folder:{(data / 'train').resolve()}"
    assert saved["model"]["decoder"] == "channels"  # the shipped recipe's, as configured
    stamp = (data / "train/labels.jsonl").stat().st_mtime_ns
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (data / "train/labels.jsonl").stat().st_mtime_ns == stamp  # exports kept
    assert "resumed" in again.stderr
    # CONFIG picks another recipe
    other = tmp_path / "run-trunk"
    done = subprocess.run(["bash", str(root / "scripts/folder_run.sh"), str(data), str(other)],
                          env={**env, "CONFIG": str(root / "configs/digit-circle-mt-trunk.json")},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((other / "config.json").read_text())["model"]["trunk_presence_weight"] == 1
