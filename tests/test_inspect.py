"""sparling_core.analysis.inspect: the tensor work behind the service, on a tiny trained
checkpoint."""

from __future__ import annotations

import math
import pathlib
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from helpers import make_tiny_checkpoint  # noqa: E402

from sparling_core.analysis import inspect as si  # noqa: E402
from sparling_core.analysis.metrics import MotifStats, align_image  # noqa: E402
from sparling_core.checkpoint import load_checkpoint  # noqa: E402
from sparling_core.domains import digit_circle as dc  # noqa: E402
from sparling_core.domains import get_domain  # noqa: E402

DIGITS = get_domain("digit-circle")


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "shared-checkpoints"
    if not (root / "tiny" / "history.jsonl").exists():  # written last
        make_tiny_checkpoint(root / "tiny")
    return load_checkpoint(root / "tiny")


@pytest.fixture
def model(checkpoint):
    return checkpoint.model


def _image(seed: int = 3) -> np.ndarray:
    return dc.sample(seed).image.astype(np.float32)


def _state_bytes(model) -> dict[str, bytes]:
    return {k: v.cpu().numpy().tobytes() for k, v in model.state_dict().items()}


# --- prepare_image ----------------------------------------------------------------------

def test_prepare_image_passes_the_right_size_through():
    image = np.random.default_rng(0).random((100, 100)).astype(np.float32)
    out = si.prepare_image(image, 100)
    assert out.shape == (100, 100) and out.dtype == np.float32
    np.testing.assert_array_equal(out, image)


def test_prepare_image_refuses_other_sizes_without_fit():
    with pytest.raises(ValueError, match="expected a 100x100 image, got 90x100"):
        si.prepare_image(np.zeros((90, 100)), 100)


def test_prepare_image_pads_centrally_and_crops_centrally():
    small = np.ones((2, 3), dtype=np.float32)
    out = si.prepare_image(small, 6, "pad")
    expected = np.zeros((6, 6), dtype=np.float32)
    expected[2:4, 1:4] = 1
    np.testing.assert_array_equal(out, expected)
    big = np.arange(64, dtype=np.float32).reshape(8, 8) / 64
    np.testing.assert_array_equal(si.prepare_image(big, 4, "pad"), big[2:6, 2:6])


def test_prepare_image_resizes_with_nearest_neighbour():
    small = np.array([[1, 0], [0, 1]], dtype=np.float32)
    np.testing.assert_array_equal(si.prepare_image(small, 4, "resize"),
                                  np.kron(small, np.ones((2, 2))))
    big = np.kron(np.array([[0, 1], [1, 0]], dtype=np.float32), np.ones((50, 50)))
    np.testing.assert_array_equal(si.prepare_image(big, 2, "resize"), [[0, 1], [1, 0]])


@pytest.mark.parametrize("bad, message", [
    ([[0.0, 1.5]], r"\[0, 1\]"),
    ([[0.0, -0.1]], r"\[0, 1\]"),
    ([[0.0, float("nan")]], "finite"),
    ([[0.0, 1.0], [1.0]], "rectangular"),
    ([], "2-D|empty"),
    ([[]], "empty"),
    ([[[0.0]]], "2-D"),
])
def test_prepare_image_rejects_bad_arrays(bad, message):
    with pytest.raises(ValueError, match=message):
        si.prepare_image(bad, 4, "pad")


def test_prepare_image_rejects_unknown_fit():
    with pytest.raises(ValueError, match="fit must be one of"):
        si.prepare_image(np.zeros((4, 4)), 4, "stretch")


# --- activations ------------------------------------------------------------------------

def test_sparse_activations_lists_nonzero_entries():
    m = torch.zeros(3, 4, 5)
    m[0, 1, 2], m[2, 3, 4] = 0.5, 2.0
    assert si.sparse_activations(m) == [
        {"channel": 0, "row": 1, "col": 2, "value": 0.5},
        {"channel": 2, "row": 3, "col": 4, "value": 2.0},
    ]
    only_big = m > 1
    assert si.sparse_activations(m, only_big) == [
        {"channel": 2, "row": 3, "col": 4, "value": 2.0}]


def test_run_image_matches_the_model(model):
    image = _image()
    result = si.run_image(model, image, dense=True)
    decoded = model.generate(dc.images_to_tensor(image))
    motifs = decoded.motifs[0]
    assert result["sequence"] == decoded.sequences[0]
    assert result["probabilities"] == pytest.approx(decoded.probabilities[0])
    assert len(result["probabilities"]) == min(len(result["sequence"]) + 1,
                                               model.config.max_digits + 1)
    assert (result["height"], result["width"], result["channels"]) == (100, 100, 10)
    assert result["n_active"] == int((motifs != 0).sum()) == len(result["activations"])
    assert result["density"] == pytest.approx(result["n_active"] / motifs.numel())
    dense = torch.tensor(result["dense"])
    assert dense.shape == (10, 100, 100)
    torch.testing.assert_close(dense, motifs)
    for a in result["activations"][:50]:
        assert dense[a["channel"], a["row"], a["col"]].item() == pytest.approx(a["value"])
    assert si.run_image(model, image)["dense"] is None


def test_run_images_batch_equals_single_images(model):
    images = [_image(s) for s in (1, 2, 3)]
    batch = si.run_images(model, np.stack(images))
    for image, result in zip(images, batch, strict=True):
        single = si.run_image(model, image)
        assert result["sequence"] == single["sequence"]
        assert result["n_active"] == single["n_active"]


def test_the_empty_map_decode_is_computed_once_per_model_and_weights(checkpoint, monkeypatch):
    """run_images reports the decoder's answer for an empty map with every image; it is
    decoded once per model and kept until a decoder weight changes in place."""
    model = load_checkpoint(checkpoint.path).model.eval()
    zeros_decoded = []
    decode = model.decode_motifs

    def counting(motifs, **kwargs):
        if not motifs.any():
            zeros_decoded.append(motifs.shape)
        return decode(motifs, **kwargs)

    monkeypatch.setattr(model, "decode_motifs", counting)
    image = _image()
    first = si.run_image(model, image)["empty_map"]
    with torch.inference_mode():
        direct = decode(torch.zeros(1, 10, 100, 100))
    assert first["sequence"] == direct[0][0]
    assert first["probabilities"] == pytest.approx(direct[1][0])
    si.run_images(model, np.stack([image, _image(4)]))
    assert len(zeros_decoded) == 1
    with torch.no_grad():  # an optimizer step does this: a new weights version
        model.decoder.head.out.bias.add_(torch.linspace(-3, 3, model.decoder.head.out.bias.numel()))
    changed = si.run_image(model, image)["empty_map"]
    assert len(zeros_decoded) == 2
    with torch.inference_mode():
        assert changed["sequence"] == decode(torch.zeros(1, 10, 100, 100))[0][0]
    # load_state_dict and a replaced decoder recompute it too; a caller's edit stays its own
    model.load_state_dict(load_checkpoint(checkpoint.path).model.state_dict())
    si.run_image(model, image)["empty_map"]["sequence"].append(99)
    assert len(zeros_decoded) == 3
    assert si.run_image(model, image)["empty_map"]["sequence"] == first["sequence"]
    assert len(zeros_decoded) == 3
    model.decoder = load_checkpoint(checkpoint.path).model.decoder.eval()
    si.run_image(model, image)
    assert len(zeros_decoded) == 4


def test_run_image_needs_the_model_size(model):
    with pytest.raises(ValueError, match="100x100"):
        si.run_image(model, np.zeros((50, 50), dtype=np.float32))


def test_inspection_refuses_training_mode(model):
    model.train()
    try:
        with pytest.raises(ValueError, match="eval"):
            si.run_image(model, _image())
    finally:
        model.eval()


# --- analysis ---------------------------------------------------------------------------

def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else x


@pytest.mark.parametrize("seed", [3, 11, 12])
def test_analyze_agrees_with_the_metrics_module(model, seed):
    """Without a checkpoint assignment, per-image FPE / FNE / CE are MotifStats on one image."""
    s = dc.sample(seed)
    result = si.analyze(model, s.image.astype(np.float32), s.motifs, None, s.label)
    motifs = model.generate(dc.images_to_tensor(s.image)).motifs
    stats = MotifStats()
    stats.add_alignment(align_image(motifs[0], s.motifs), motifs[0].numel())
    report = stats.report()
    for key in ("fpe", "fne", "ce"):
        expected = _none_if_nan(report[key])
        assert (result[key] is None) == (expected is None)
        if expected is not None:
            assert result[key] == pytest.approx(expected)
    assert result["label"] == s.label
    assert len(result["motifs"]) == len(s.motifs)
    assert len(result["false_positives"]) == report["false_positive_pixels"]
    assert result["n_active"] == int((motifs != 0).sum())


def test_analyze_statuses_on_a_known_map(model, monkeypatch):
    """A map with one hit, one confusion, one miss and one false positive."""
    motifs = [{"digit": 2, "box": (10, 10, 22, 18)}, {"digit": 5, "box": (40, 40, 52, 48)},
              {"digit": 7, "box": (70, 70, 82, 78)}]
    crafted = torch.zeros(1, 10, 100, 100)
    crafted[0, 4, 15, 12] = 3.0  # channel 4 is digit 2: hit
    crafted[0, 4, 16, 13] = 1.0  # a second activation in the same box counts once
    crafted[0, 6, 45, 44] = 2.0  # channel 6 is digit 9, the box holds a 5: confused
    crafted[0, 1, 95, 5] = 0.5  # outside every box: false positive
    monkeypatch.setattr(model, "sparse_motifs", lambda images: crafted.clone())
    c2d = {4: 2, 6: 9, 1: 5}
    result = si.analyze(model, np.zeros((100, 100), np.float32), motifs, c2d)
    assert [d["status"] for d in result["motifs"]] == ["hit", "confused", "missed"]
    assert result["motifs"][0] | {"box": None} == {
        "symbol": "2", "box": None, "status": "hit", "channel": 4, "value": 3.0, "row": 15,
        "col": 12}
    assert result["motifs"][2]["channel"] is None and result["motifs"][2]["value"] == 0.0
    assert result["assignment"] == {"1": "5", "4": "2", "6": "9"}
    assert result["false_positives"] == [{"channel": 1, "row": 95, "col": 5, "value": 0.5}]
    assert result["fpe"] == pytest.approx(100 / 3)  # 1 FP / (2 predicted + 1 FP)
    assert result["fne"] == pytest.approx(100 / 3)  # 1 missed of 3
    assert result["ce"] == pytest.approx(50.0)  # 1 of 2 predicted is off the assignment
    assert result["n_active"] == 4 and result["label"] is None
    # without an assignment the image's own best assignment makes both predictions hits
    own = si.analyze(model, np.zeros((100, 100), np.float32), motifs, None)
    assert [d["status"] for d in own["motifs"]] == ["hit", "hit", "missed"]
    assert own["ce"] == 0.0


def test_analyze_reports_null_rates_without_denominators(model, monkeypatch):
    monkeypatch.setattr(model, "sparse_motifs", lambda images: torch.zeros(1, 10, 100, 100))
    result = si.analyze(model, np.zeros((100, 100), np.float32), [], {})
    assert result["fpe"] is None and result["fne"] is None and result["ce"] is None
    assert result["motifs"] == [] and result["n_active"] == 0


def test_parse_channel_to_digit():
    assert si.parse_channel_to_digit({"0": 3, "9": 1}, 10) == {0: 3, 9: 1}
    assert si.parse_channel_to_digit(None, 10) is None
    assert si.parse_channel_to_digit({"x": 1}, 10) is None
    assert si.parse_channel_to_digit({"10": 1}, 10) is None
    assert si.parse_channel_to_digit({"0": 12}, 10) is None


# --- interventions ----------------------------------------------------------------------

def test_intervene_without_edits_changes_nothing(model):
    image = _image()
    result = si.intervene(model, image)
    plain = si.run_image(model, image)
    assert result["before"] == result["after"]
    assert result["before"]["sequence"] == plain["sequence"]
    assert result["activations_after"] == plain["activations"]
    assert (result["removed"], result["added"]) == (0, 0)


def test_intervene_removes_and_adds(model):
    image = _image()
    plain = si.run_image(model, image)
    on = plain["activations"]
    remove = [{k: a[k] for k in ("channel", "row", "col")} for a in on[:5]]
    on_set = {(a["channel"], a["row"], a["col"]) for a in on}
    off = next((c, r, col) for c in range(10) for r in range(100) for col in range(100)
               if (c, r, col) not in on_set)
    remove.append(dict(zip(("channel", "row", "col"), off, strict=True)))  # was zero
    remove.append(remove[0])  # twice: the second finds zero
    add = [{"channel": 7, "row": 50, "col": 50, "value": 9.5}]
    result = si.intervene(model, image, remove, add)
    assert result["removed"] == 5 and result["added"] == 1
    after = {(a["channel"], a["row"], a["col"]): a["value"] for a in result["activations_after"]}
    assert all((r["channel"], r["row"], r["col"]) not in after for r in remove)
    assert after[(7, 50, 50)] == 9.5
    still_on = on_set - {(r["channel"], r["row"], r["col"]) for r in remove}
    assert len(after) == len(still_on | {(7, 50, 50)})
    # the decoding after is the decoder run on exactly that edited map
    edited = torch.zeros(1, 10, 100, 100)
    for (c, r, col), v in after.items():
        edited[0, c, r, col] = v
    seqs, probs = model.decode_motifs(edited)
    assert result["after"]["sequence"] == seqs[0]
    assert result["after"]["probabilities"] == pytest.approx(probs[0])


def test_intervene_removing_everything_empties_the_map(model):
    image = _image()
    on = si.run_image(model, image)["activations"]
    result = si.intervene(model, image, [{k: a[k] for k in ("channel", "row", "col")}
                                         for a in on])
    assert result["removed"] == len(on) and result["activations_after"] == []
    seqs, _ = model.decode_motifs(torch.zeros(1, 10, 100, 100))
    assert result["after"]["sequence"] == seqs[0]


@pytest.mark.parametrize("edit", [
    {"remove": [{"channel": 10, "row": 0, "col": 0}]},
    {"remove": [{"channel": 0, "row": 100, "col": 0}]},
    {"add": [{"channel": 0, "row": 0, "col": -1, "value": 1.0}]},
    {"add": [{"channel": 0, "row": 0, "col": 0, "value": 0.0}]},
    {"add": [{"channel": 0, "row": 0, "col": 0, "value": float("inf")}]},
])
def test_intervene_rejects_bad_edits(model, edit):
    with pytest.raises(ValueError):
        si.intervene(model, _image(), **edit)


# --- channel summaries ------------------------------------------------------------------

N_SUMMARY = 6


@pytest.fixture(scope="module")
def summaries(checkpoint):
    c2d = si.parse_channel_to_digit(checkpoint.metrics["channel_to_digit"], 10)
    return si.channel_summaries(checkpoint.model, N_SUMMARY, assignment=c2d)


def test_channel_summaries_count_what_the_model_does(checkpoint, summaries):
    model = checkpoint.model
    samples = [dc.sample(dc.VALIDATION_SEEDS_START + i) for i in range(N_SUMMARY)]
    maps = model.generate(dc.images_to_tensor(np.stack([s.image for s in samples]))).motifs
    assert [s["channel"] for s in summaries] == list(range(10))
    for s in summaries:
        values = maps[:, s["channel"]][maps[:, s["channel"]] != 0]
        assert s["density"] == pytest.approx(values.numel() / (N_SUMMARY * 100 * 100))
        hist = s["histogram"]
        assert len(hist["edges"]) == len(hist["counts"]) + 1 == 21
        assert sum(hist["counts"]) == values.numel()
        if values.numel():
            assert hist["edges"][0] == pytest.approx(values.min().item())
            assert hist["edges"][-1] == pytest.approx(values.max().item())
    c2d = checkpoint.metrics["channel_to_digit"]
    assert {str(s["channel"]): s["symbol"] for s in summaries} == {
        c: str(d) for c, d in c2d.items()}


def test_channel_summaries_top_crops(summaries):
    images = {}
    for s in summaries:
        crops = s["top_crops"]
        assert len(crops) <= 12
        assert [c["value"] for c in crops] == sorted((c["value"] for c in crops), reverse=True)
        assert len({c["seed"] for c in crops}) == len(crops)  # one crop per image
        for c in crops:
            assert dc.VALIDATION_SEEDS_START <= c["seed"] < dc.VALIDATION_SEEDS_START + N_SUMMARY
            image = images.setdefault(c["seed"], dc.sample(c["seed"]).image)
            r0, c0 = c["crop_origin"]
            crop = np.array(c["crop"])
            assert crop.shape[0] <= 20 and crop.shape[1] <= 20
            assert r0 <= c["row"] < r0 + crop.shape[0] and c0 <= c["col"] < c0 + crop.shape[1]
            np.testing.assert_array_equal(crop, image[r0 : r0 + crop.shape[0],
                                                      c0 : c0 + crop.shape[1]])


def test_channel_summaries_second_pass_is_exact(checkpoint, summaries):
    """Over the value budget, the histogram is counted in a second pass: same numbers."""
    c2d = si.parse_channel_to_digit(checkpoint.metrics["channel_to_digit"], 10)
    again = si.channel_summaries(checkpoint.model, N_SUMMARY, assignment=c2d,
                                 max_values=10, batch_size=4)
    # the median and the middle crops come from the activations held (none here)
    held = ("median", "middle_crops")
    assert [{k: v for k, v in s.items() if k not in held} for s in again] == [
        {k: v for k, v in s.items() if k not in held} for s in summaries]


def _maps(model, n: int = N_SUMMARY) -> tuple[list, torch.Tensor]:
    """The first n validation samples (as the domain gives them) and their sparse maps."""
    samples = DIGITS.samples(range(dc.VALIDATION_SEEDS_START, dc.VALIDATION_SEEDS_START + n),
                             "val")
    with torch.inference_mode():
        maps = model.sparse_motifs(dc.images_to_tensor(np.stack([s.image for s in samples])))
    return samples, maps


def _padded_boxes(sample) -> list[tuple[str, tuple[int, int, int, int]]]:
    p = DIGITS.box_padding
    return [(m.symbol, (m.box[0] - p, m.box[1] - p, m.box[2] + p, m.box[3] + p))
            for m in sample.motifs]


def _inside(box, row: int, col: int) -> bool:
    r0, c0, r1, c1 = box
    return r0 <= row < r1 and c0 <= col < c1


def test_channel_summaries_outside_crops_lie_outside_every_padded_box(checkpoint, summaries):
    samples, maps = _maps(checkpoint.model)
    by_seed = {s.seed: (s, i) for i, s in enumerate(samples)}
    seen = 0
    for s in summaries:
        crops = s["outside_crops"]
        assert len(crops) <= 8 and len({c["seed"] for c in crops}) == len(crops)
        assert [c["value"] for c in crops] == sorted((c["value"] for c in crops), reverse=True)
        for c in crops:
            sample, i = by_seed[c["seed"]]
            assert not any(_inside(box, c["row"], c["col"]) for _, box in _padded_boxes(sample))
            assert maps[i, s["channel"], c["row"], c["col"]].item() == pytest.approx(c["value"])
            # the strongest activation of that image outside the boxes
            outside = [maps[i, s["channel"], r, k].item()
                       for r, k in zip(*np.nonzero(maps[i, s["channel"]].numpy()), strict=True)
                       if not any(_inside(b, r, k) for _, b in _padded_boxes(sample))]
            assert c["value"] == pytest.approx(max(outside))
            seen += 1
    assert seen  # the tiny model fires outside the boxes


def test_channel_summaries_middle_crops_are_nearest_the_median(checkpoint, summaries):
    samples, maps = _maps(checkpoint.model)
    for s in summaries:
        ch = s["channel"]
        values = maps[:, ch][maps[:, ch] != 0].numpy()
        if not values.size:
            assert s["median"] is None and s["middle_crops"] == []
            continue
        median = float(np.median(values))
        assert s["median"] == pytest.approx(median)
        # per image, how near its nearest activation comes to the median
        nearest = sorted(float(np.abs(maps[i, ch][maps[i, ch] != 0].numpy() - median).min())
                         for i in range(len(samples)) if (maps[i, ch] != 0).any())
        crops = s["middle_crops"]
        assert len(crops) == min(8, len(nearest))
        assert [abs(c["value"] - median) for c in crops] == pytest.approx(nearest[:len(crops)])
        for c in crops:
            i = c["seed"] - dc.VALIDATION_SEEDS_START
            assert maps[i, ch, c["row"], c["col"]].item() == pytest.approx(c["value"])


def test_channel_summaries_precision_is_a_hand_count(checkpoint, summaries):
    samples, maps = _maps(checkpoint.model)
    for s in summaries:
        ch, symbol = s["channel"], s["symbol"]
        on = [(i, r, k) for i, r, k in zip(*np.nonzero(maps[:, ch].numpy()), strict=True)]
        if symbol is None or not on:
            assert s["precision"] is None
            continue
        hits = sum(any(sym == symbol and _inside(box, r, k)
                       for sym, box in _padded_boxes(samples[i])) for i, r, k in on)
        assert 0 <= s["precision"] <= 1
        assert s["precision"] == pytest.approx(hits / len(on))


def test_channel_summaries_decode_effect_counts_changed_outputs():
    """On the shipped model: removing a channel (every activation of it, with `intervene`,
    one image at a time) changes the decode of exactly `changed` of the n images; a channel
    that never fires changes nothing."""
    shipped = load_checkpoint(pathlib.Path(__file__).parent.parent / "checkpoints"
                              / "digit-circle-mt")
    model = shipped.model.eval()
    n = 8
    result = si.channel_summaries(model, n, top_k=1, middle_k=1, outside_k=1)
    samples, maps = _maps(model, n)
    silent = 0
    for s in result:
        ch = s["channel"]
        assert s["effect"]["n"] == n
        changed = 0
        for i, sample in enumerate(samples):
            on = [{"channel": ch, "row": int(r), "col": int(k)}
                  for r, k in zip(*np.nonzero(maps[i, ch].numpy()), strict=True)]
            if on:
                edit = si.intervene(model, sample.image, remove=on)
                changed += edit["before"]["sequence"] != edit["after"]["sequence"]
        assert s["effect"]["changed"] == changed
        if not (maps[:, ch] != 0).any():
            silent += 1
            assert s["effect"]["changed"] == 0 and s["precision"] is None
            assert s["top_crops"] == s["middle_crops"] == s["outside_crops"] == []
    assert silent and sum(s["effect"]["changed"] for s in result)  # both cases are seen


def test_channel_summaries_report_progress_and_can_be_stopped(model):
    seen = []
    si.channel_summaries(model, 5, batch_size=2, progress=lambda d, n: seen.append((d, n)))
    assert seen == [(2, 5), (4, 5), (5, 5)]

    def stop(done, n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        si.channel_summaries(model, 5, batch_size=2, progress=stop)


def test_channel_summaries_assign_digits_without_a_checkpoint_assignment(model):
    result = si.channel_summaries(model, 3, top_k=2, crop=8)
    digits = [s["symbol"] for s in result if s["symbol"] is not None]
    assert len(digits) == len(set(digits))  # one-to-one
    assert all(len(s["top_crops"]) <= 2 for s in result)


def test_inspection_leaves_the_model_state_alone(model):
    before = _state_bytes(model)
    image = _image()
    si.run_image(model, image, dense=True)
    si.analyze(model, image, dc.sample(3).motifs)
    si.intervene(model, image, [{"channel": 0, "row": 1, "col": 1}],
                 [{"channel": 1, "row": 2, "col": 2, "value": 1.0}])
    si.channel_summaries(model, 2)
    assert _state_bytes(model) == before
    assert not model.training


# --- honest decodes ---------------------------------------------------------------------

def test_decode_warnings_name_each_reason():
    ink = (0.15, 0.2, 0.25)
    assert si.decode_warnings(3, ["1", "2", "3"], ["5"], 0.2, ink) == []
    empty = si.decode_warnings(0, ["5", "9", "7"], ["5", "9", "7"], 0.2, ink)
    assert len(empty) == 1 and "No motif is active" in empty[0]
    short = si.decode_warnings(2, ["3", "7", "3", "3", "3"], ["5"], 0.2, ink)
    assert any("5 tokens from 2 active motifs" in w and "3 token(s)" in w for w in short)
    assert any("empty map" in w for w in si.decode_warnings(4, ["5"], ["5"], 0.2, ink))
    assert any("inverted" in w for w in si.decode_warnings(4, ["1"], ["5"], 0.8, ink))
    assert any("far from" in w for w in si.decode_warnings(4, ["1"], ["5"], 0.01, ink))
    assert si.decode_warnings(4, ["1"], ["5"], 0.01, None) == []


def test_run_image_reports_the_empty_map_baseline(model):
    result = si.run_image(model, _image())
    empty_seq, empty_prob = model.decode_motifs(torch.zeros(1, 10, 100, 100))
    assert result["empty_map"]["sequence"] == empty_seq[0]
    assert result["empty_map"]["tokens"] == [str(t) for t in empty_seq[0]]
    assert result["empty_map"]["probabilities"] == pytest.approx(empty_prob[0])
    assert result["ink_fraction"] == pytest.approx(float(np.mean(_image())))
    assert isinstance(result["warnings"], list)
