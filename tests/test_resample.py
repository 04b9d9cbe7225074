import importlib
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_config

from sparling_core.checkpoint import load_checkpoint, load_train_state
from sparling_core.domains import digit_circle as dc
from sparling_core.models.sparling import IGNORE, SparlingModel, encode_labels, presence_targets
from sparling_core.training.loop import TrainConfig, train
from sparling_core.training.resample import (
    UNSELECTIVE,
    channel_peaks,
    channel_selectivity,
    cofiring,
    detector_coverage,
    find_duplicates,
    find_unselective,
    presence_errors,
    resample_channels,
    resample_summary,
    selectivity,
    sparse_activity,
    uncovered_tokens,
)


def _active(n=2, c=4, points=()):
    """points: (image, channel, row, col) -> an (n, c, 40, 40) boolean map."""
    a = torch.zeros(n, c, 40, 40, dtype=torch.bool)
    for i, ch, r, col in points:
        a[i, ch, r, col] = True
    return a


def test_cofiring_counts_neighbours_in_the_same_image_only():
    a = _active(points=[(0, 0, 10, 10), (0, 1, 13, 7), (1, 0, 30, 30), (0, 2, 30, 30)])
    co = cofiring(a, radius=3)
    assert co[0, 1] == pytest.approx(0.5)  # one of channel 0's two pixels has channel 1 near
    assert co[1, 0] == pytest.approx(1.0)
    assert co[0, 2] == 0.0  # (30, 30) is in image 1 for channel 0, image 0 for channel 2
    assert co[3].sum() == 0.0  # silent channel
    assert cofiring(a, radius=2)[1, 0] == 0.0  # 3 px apart: outside radius 2
    with pytest.raises(ValueError):
        cofiring(a[0], radius=3)


def test_find_duplicates_drops_the_smaller_channel_once():
    points = []
    for i in range(2):
        for k in range(10):  # channels 0 and 1 fire together; channel 1 a little more
            points += [(i, 0, 2 + 3 * k, 5), (i, 1, 2 + 3 * k, 6), (i, 2, 2 + 3 * k, 30)]
        points.append((i, 1, 38, 38))
    pairs = find_duplicates(_active(points=points), radius=2)
    assert pairs == [(0, 1)]
    assert find_duplicates(_active(points=points), radius=2, exclude={1}) == []
    assert find_duplicates(_active(points=points), radius=2, min_active=100) == []
    assert find_duplicates(_active(points=points), radius=0) == []


def test_resample_channels_resets_one_channel_and_its_optimizer_state():
    torch.manual_seed(0)
    model = SparlingModel(tiny_config(initial_density=0.01))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    images, labels = dc.collate([dc.sample(i) for i in range(8)])
    inputs, targets = encode_labels(labels, model.config.max_digits)
    for _ in range(2):
        out = model(images, inputs)
        loss = F.cross_entropy(out.logits.flatten(0, 1), targets.flatten(),
                               ignore_index=IGNORE)
        loss = loss + F.binary_cross_entropy_with_logits(out.presence_logits,
                                                         presence_targets(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    head = model.motif_model.head
    before = {k: v.clone() for k, v in model.state_dict().items()}
    resample_channels(model, [3], opt, targets=[8], target_weight=1.5)
    rows = slice(12, 16)  # channel 3's four sub-pixel rows
    assert not torch.equal(head.weight[rows], before["motif_model.head.weight"][rows])
    assert torch.equal(head.weight[:12], before["motif_model.head.weight"][:12])
    assert torch.equal(head.weight[16:], before["motif_model.head.weight"][16:])
    bn = model.bottleneck.batch_norm
    assert bn.running_mean[3] == 0 and bn.running_var[3] == 1
    assert bn.running_mean[2] == before["bottleneck.batch_norm.running_mean"][2]
    others = torch.cat([before["bottleneck.thresholds"][:3], before["bottleneck.thresholds"][4:]])
    assert model.bottleneck.thresholds[3] == others.median()
    column = model.presence.weight[:, 3]
    assert column[8] == 1.5 and (torch.cat([column[:8], column[9:]]) == 0).all()
    moments = opt.state[head.weight]
    assert (moments["exp_avg"][rows] == 0).all() and moments["exp_avg"][:12].abs().sum() > 0
    # the second moment is the mean of the rows that stay, so Adam's steps keep their size
    kept_sq = torch.cat([moments["exp_avg_sq"][:12], moments["exp_avg_sq"][16:]])
    assert torch.allclose(moments["exp_avg_sq"][rows],
                          torch.full_like(moments["exp_avg_sq"][rows], float(kept_sq.mean())))
    assert (opt.state[model.presence.weight]["exp_avg"][:, 3] == 0).all()
    with pytest.raises(ValueError):
        resample_channels(model, [10], opt)
    with pytest.raises(ValueError, match="targets"):
        resample_channels(model, [1, 2], opt, targets=[3])
    # the model still runs, and the sparse map has the model's shape
    assert sparse_activity(model, images).shape == (8, 10, 100, 100)


def test_presence_errors_single_out_the_unexplained_digit():
    torch.manual_seed(0)
    model = SparlingModel(tiny_config())
    samples = [dc.sample(i) for i in range(40)]
    images = dc.images_to_tensor(np.stack([s.image for s in samples]))
    labels = [s.label for s in samples]
    with torch.no_grad():  # the head knows each digit's presence, except digit 3's
        model.presence.weight.zero_()
        targets = presence_targets(labels)
        model.presence.bias.copy_(torch.logit(targets.mean(0).clamp(0.05, 0.95)))
    errors = presence_errors(model, images, labels)
    assert errors.shape == (10,)
    # a constant prediction at the base rate: the error is the entropy of that rate
    rate = targets.mean(0).clamp(0.05, 0.95)
    entropy = -(rate * rate.log() + (1 - rate) * (1 - rate).log())
    assert torch.allclose(errors, entropy, atol=1e-5)


def test_trainer_resamples_records_and_resumes(tmp_path, monkeypatch):
    train_module = importlib.import_module("sparling_core.training.loop")  # the module, not train()
    calls = []

    def fake_duplicates(active, radius, threshold, exclude=frozenset()):
        calls.append(active.shape)
        return [] if {4, 7} & set(exclude) else [(4, 7)]

    monkeypatch.setattr(train_module, "find_duplicates", fake_duplicates)
    base = dict(model=tiny_config(), batch_size=4, val_every=8, val_size=8,
                decay_per_sample=0.0, initial_threshold=0.0, bf16=False,
                channels_last=False, threads=1, resample_duplicates=True,
                resample_below_density=1.0, resample_cooldown=16)
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), max_samples=32, **base), progress=False)
    history = load_checkpoint(out).history
    # checks at 8 and then after the 16-sample cooldown, at 24; none at 32, the last
    # the fresh channel is pointed at a digit (the tiny model explains none of them); at
    # the next check it still has not learned it, so it is drawn again for the same digit
    rows = [h["resampled"] for h in history]
    assert [[r[:2] for r in row] for row in rows] == [[[4, 7]], [], [[4, -1]], []]
    assert rows[0][0][2] == rows[2][0][2]
    state = load_train_state(out)
    assert state["last_resample"] == 24 and state["samples_seen"] == 32
    assert state["resample_pending"] == [[4, rows[0][0][2]]]
    assert state["resample_retries"] == [[4, 1]]
    train(TrainConfig(out=str(out), max_samples=48, **base), resume=True, progress=False)
    history = load_checkpoint(out).history
    assert [len(h["resampled"]) for h in history] == [1, 0, 1, 0, 1, 0]
    assert all(shape == (8, 10, 100, 100) for shape in calls)
    # off by default: no checks at all
    calls.clear()
    train(TrainConfig(out=str(tmp_path / "off"), max_samples=16,
                      **{**base, "resample_duplicates": False}), progress=False)
    assert calls == []
    # every digit explained (min error above any cross-entropy): nothing is resampled
    train(TrainConfig(out=str(tmp_path / "explained"), max_samples=16,
                      **{**base, "resample_min_error": 100.0,
                                                 "resample_retry_error": 100.0}), progress=False)
    assert all(h["resampled"] == [] for h in load_checkpoint(tmp_path / "explained").history)
    with pytest.raises(ValueError, match="resample_threshold"):
        TrainConfig(resample_threshold=0)


def test_plan_resampling_retries_releases_and_assigns_free_digits(monkeypatch):
    train_module = importlib.import_module("sparling_core.training.loop")
    errors = torch.full((10,), 0.01)
    errors[3], errors[8], errors[5] = 0.69, 0.3, 0.6
    monkeypatch.setattr(train_module, "presence_errors", lambda *a: errors)
    monkeypatch.setattr(train_module, "sparse_activity", lambda *a: None)
    found = [(0, 5), (2, 9), (6, 1), (7, 4)]
    monkeypatch.setattr(train_module, "find_duplicates", lambda *a, exclude: [
        (d, k) for d, k in found if d not in exclude and k not in exclude])
    config = TrainConfig(resample_duplicates=True, resample_min_error=0.1,
                         resample_retry_error=0.5)
    # channel 2 learns digit 8 (0.3: learning, keep waiting), channel 7 has learned digit 1
    # (explained: released), channel 4 is stuck on digit 3 (retry); digit 5 is free
    pending, retries = {2: 8, 7: 1, 4: 3}, {7: 1}
    rows = train_module._plan_resampling(None, None, None, config, pending, retries)
    # (2, 9) and (7, 4) skipped: 2 is still learning, 4 is being redrawn
    assert rows == [(4, -1, 3), (0, 5, 5)]
    assert pending == {2: 8, 4: 3} and retries == {}
    # channel 4 was redrawn as often as allowed: it is left alone, and still not a duplicate
    rows = train_module._plan_resampling(None, None, None, config, {2: 8, 4: 3},
                                         {4: config.resample_max_retries})
    assert rows == [(0, 5, 5)]


def test_resampling_changes_only_that_channel_of_the_motif_map():
    torch.manual_seed(0)
    model = SparlingModel(tiny_config(initial_density=0.01)).eval()
    images, _ = dc.collate([dc.sample(i) for i in range(2)])
    with torch.no_grad():
        before = model.motif_model(images)
        resample_channels(model, [3])
        after = model.motif_model(images)
    changed = (before != after).flatten(2).any(-1).any(0)  # (C,)
    assert changed.tolist() == [c == 3 for c in range(10)]


@pytest.mark.parametrize("overrides", [
    {"sparsity": "st"}, {"batch_norm": False}, {"decoder": "cells"}, {"sparsity": "l1"},
    {"sparsity": "topk"}])
def test_resampling_works_for_every_bottleneck_and_decoder(overrides):
    torch.manual_seed(0)
    model = SparlingModel(tiny_config(initial_density=0.05, **overrides))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    resample_channels(model, [1, 2], None, targets=[3, 8])  # no optimizer at all
    resample_channels(model, [1], opt)  # an optimizer without state yet
    images, labels = dc.collate([dc.sample(i) for i in range(4)])
    inputs, targets = encode_labels(labels, model.config.max_digits)
    out = model(images, inputs)
    loss = F.cross_entropy(out.logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
    loss.backward()
    opt.step()
    resample_channels(model, [5], opt, targets=[0])
    assert torch.isfinite(model(images, inputs).logits).all()
    if overrides.get("decoder") == "cells":  # the decoder's reading of channel 5 is fresh
        assert (opt.state[model.decoder.cell_conv[0].weight]["exp_avg"][:, 5] == 0).all()


def test_trainer_resamples_with_bf16_and_channels_last(tmp_path, monkeypatch):
    # bf16 autocast and channels-last weights, as the shipped run used
    train_module = importlib.import_module("sparling_core.training.loop")
    monkeypatch.setattr(train_module, "find_duplicates",
                        lambda *a, exclude=frozenset(): [(4, 7)] if 4 not in exclude else [])
    cfg = TrainConfig(out=str(tmp_path / "run"), model=tiny_config(), batch_size=4,
                      val_every=8, val_size=8, max_samples=24, decay_per_sample=0.0,
                      initial_threshold=0.0, threads=1, resample_duplicates=True,
                      resample_below_density=1.0, resample_cooldown=8, bf16=True)
    assert cfg.bf16 and cfg.channels_last
    ckpt = load_checkpoint(train(cfg, progress=False))
    assert [r[:2] for r in ckpt.history[0]["resampled"]] == [[4, 7]]
    assert all(torch.isfinite(v.float()).all() for v in ckpt.model.state_dict().values())


def _auc_reference(score, target):
    """ROC AUC by counting pairs (ties half): the definition, independent of ranks."""
    pos, neg = score[target == 1], score[target == 0]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * ties) / (len(pos) * len(neg))


def test_selectivity_is_the_best_auc_over_tokens_with_ties_counted_half():
    rng = np.random.default_rng(0)
    n = 60
    targets = (rng.random((n, 6)) < 0.4).astype(np.float64)
    targets[:, 3] = 1.0  # a token in every answer: not scored
    targets[:, 4] = 0.0  # a token in none: not scored
    targets[:, 5] = 0.0
    targets[:3, 5] = 1.0  # a token in 3 answers (< min_count 5): not scored
    scores = np.stack([
        targets[:, 1] * 3.0,  # fires exactly when token 1 is there: AUC 1
        np.zeros(n),  # silent: every pair a tie, 0.5
        rng.integers(0, 3, n).astype(np.float64),  # noise with many ties
        targets[:, 0] * rng.random(n) + (1 - targets[:, 0]) * 0.5 * rng.random(n),
        (1 - targets[:, 2]) * 2.0,  # fires exactly when token 2 is absent: 1 as well
        targets[:, 5],  # perfect for the rare token 5, which is not scored
    ], 1)
    got = selectivity(torch.tensor(scores), torch.tensor(targets))
    want = [max(max(a, 1 - a) for a in (_auc_reference(scores[:, c], targets[:, t])
                                        for t in range(3)))
            for c in range(6)]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    assert got[0] == 1.0 and got[1] == 0.5 and got[4] == 1.0 and got[5] < 0.75
    # no token qualifies: unknown, and never called unselective
    unknown = selectivity(torch.tensor(scores), torch.tensor(targets[:, 3:]))
    assert torch.isnan(unknown).all()
    assert find_unselective(unknown, 0.75) == []
    with pytest.raises(ValueError, match="share N"):
        selectivity(torch.zeros(3, 2), torch.zeros(4, 2))


def test_find_unselective_orders_least_selective_first_and_honours_exclude():
    scores = torch.tensor([0.99, 0.5, 0.7, 0.95, 0.52, float("nan")])
    assert find_unselective(scores, 0.75) == [1, 4, 2]
    assert find_unselective(scores, 0.75, exclude={4}) == [1, 2]
    assert find_unselective(scores, 0.51) == [1]


class _MapModel(torch.nn.Module):
    """Stands in for a SparlingModel: a fixed sparse map per image, 10 label tokens."""

    def __init__(self, maps):
        super().__init__()
        self.maps = maps
        self.presence = torch.nn.Linear(maps.shape[1], 10)

    def sparse_motifs(self, images):
        return self.maps[images[:, 0, 0, 0].long()]


def test_channel_selectivity_reads_each_images_peak_against_its_label():
    labels = [[3], [3, 5], [5], [1], [1, 3]] * 4  # every token in and out of >= 5 images
    maps = torch.zeros(20, 3, 8, 8)
    for i, label in enumerate(labels):
        if 3 in label:
            maps[i, 0, i % 8, 2] = 2.0  # channel 0: on every 3
        maps[i, 1, 4, 4] = float(i % 2)  # channel 1: noise
    images = torch.arange(20, dtype=torch.float32)[:, None, None, None].expand(20, 1, 8, 8)
    model = _MapModel(maps).train()
    got = channel_selectivity(model, images.contiguous(), labels, batch_size=2)
    assert model.training  # restored
    assert got[0] == 1.0 and got[2] == 0.5  # channel 2 never fires
    assert 0.5 <= got[1] < 0.75


def test_plan_resampling_gives_free_digits_to_unselective_channels_first(monkeypatch):
    train_module = importlib.import_module("sparling_core.training.loop")
    errors = torch.full((10,), 0.01)
    errors[7], errors[1] = 0.69, 0.4
    monkeypatch.setattr(train_module, "presence_errors", lambda *a: errors)
    monkeypatch.setattr(train_module, "sparse_activity", lambda *a: None)
    scores = torch.tensor([0.99, 0.98, 0.51, 0.97, 0.6, 0.99, 0.99, 0.99, 0.99, 0.99])
    forwards = []
    monkeypatch.setattr(train_module, "channel_peaks", lambda *a: forwards.append(1))
    monkeypatch.setattr(train_module, "presence_targets", lambda *a: None)
    monkeypatch.setattr(train_module, "selectivity", lambda *a: scores)
    model = SparlingModel(tiny_config())
    seen = {}

    def duplicates(*a, exclude):
        seen["exclude"] = set(exclude)
        return [(d, k) for d, k in [(2, 6), (8, 9)] if d not in exclude and k not in exclude]

    monkeypatch.setattr(train_module, "find_duplicates", duplicates)
    config = TrainConfig(resample_duplicates=True, resample_unselective=True)
    # channel 4 is pending on digit 1 (still learning): neither resampled nor a candidate
    rows = train_module._plan_resampling(model, None, None, config, {4: 1}, {})
    assert rows == [(2, UNSELECTIVE, 7)]
    assert seen["exclude"] == {4, 2}
    assert len(forwards) == 1
    # off (the default): only duplicates, and no forward for the channel peaks
    rows = train_module._plan_resampling(model, None, None, TrainConfig(resample_duplicates=True),
                                         {4: 1}, {})
    assert rows == [(2, 6, 7)]
    assert len(forwards) == 1
    # nothing to hand out (every digit explained): no forward for the peaks
    monkeypatch.setattr(train_module, "presence_errors", lambda *a: torch.full((10,), 0.01))
    train_module._plan_resampling(model, None, None, config, {}, {})
    assert len(forwards) == 1
    # with resample_by_coverage too, coverage and selectivity share one forward
    monkeypatch.setattr(train_module, "detector_coverage",
                        lambda *a: (torch.full((10,), 0.99), torch.zeros(10, dtype=torch.long)))
    both = TrainConfig(resample_duplicates=True, resample_unselective=True,
                       resample_by_coverage=True)
    train_module._plan_resampling(model, None, None, both, {4: 1}, {})
    assert len(forwards) == 2
    assert "channel 2 (explained no token) -> digit 7" in resample_summary([(2, UNSELECTIVE, 7)])
    with pytest.raises(ValueError, match="resample_min_selectivity"):
        TrainConfig(resample_min_selectivity=0.5)


def test_trainer_resamples_unselective_channels_and_logs_them(tmp_path, monkeypatch):
    train_module = importlib.import_module("sparling_core.training.loop")
    monkeypatch.setattr(train_module, "find_duplicates", lambda *a, exclude: [])
    scores = torch.full((10,), 0.99)
    scores[6] = 0.55
    monkeypatch.setattr(train_module, "selectivity", lambda *a: scores)
    out = tmp_path / "run"
    config = TrainConfig(out=str(out), model=tiny_config(), batch_size=4, val_every=8,
                         val_size=8, max_samples=24, decay_per_sample=0.0,
                         initial_threshold=0.0, bf16=False, channels_last=False, threads=1,
                         resample_duplicates=True, resample_unselective=True,
                         resample_below_density=1.0, resample_cooldown=8)
    train(config, progress=False)
    rows = [h["resampled"] for h in load_checkpoint(out).history]
    # channel 6 explains no token: resampled at 8; at 16 it is pending, so it is not called
    # unselective again, but its digit is still unexplained, so it is redrawn for it (the
    # tiny model explains nothing); none at 24, the last
    assert [[r[:2] for r in row] for row in rows] == [[[6, UNSELECTIVE]], [[6, -1]], []]
    assert rows[0][0][2] == rows[1][0][2]
    state = load_train_state(out)
    assert state["resample_pending"] == [[6, rows[0][0][2]]]
    assert state["resample_retries"] == [[6, 1]]


def test_aimed_resampling_starts_the_channel_as_the_trunk_detector_of_its_digit():
    """aim=True: the fresh channel's dense map is the trunk presence head's map for its
    digit (every sub-pixel phase alike); the other channels are untouched."""
    torch.manual_seed(0)
    model = SparlingModel(tiny_config(initial_density=0.01, trunk_presence_weight=1.0)).eval()
    images, _ = dc.collate([dc.sample(i) for i in range(2)])
    mm = model.motif_model
    with torch.no_grad():
        before = mm(images)
        resample_channels(model, [3], targets=[7], aim=True)
        after = mm(images)
        trunk = mm.blocks(mm.stem(F.pixel_unshuffle(images * 2 - 1, 2)))
        digit7 = mm.trunk_presence(F.relu(trunk))[:, 7]  # (N, H/2, W/2)
    expected = digit7.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    torch.testing.assert_close(after[:, 3], expected, rtol=1e-5, atol=1e-5)
    changed = (before != after).flatten(2).any(-1).any(0)
    assert changed.tolist() == [c == 3 for c in range(10)]


def test_aimed_resampling_needs_a_trunk_head_and_targets():
    model = SparlingModel(tiny_config(initial_density=0.01))  # no trunk presence head
    with pytest.raises(ValueError, match="trunk presence head"):
        resample_channels(model, [3], targets=[7], aim=True)
    with pytest.raises(ValueError, match="trunk_presence_weight"):
        TrainConfig(model=tiny_config(), resample_aim=True)
    with_trunk = SparlingModel(tiny_config(initial_density=0.01, trunk_presence_weight=1.0))
    with pytest.raises(ValueError, match="needs targets"):
        resample_channels(with_trunk, [3], aim=True)


def test_detector_coverage_finds_the_tokens_no_channel_marks():
    labels = [[3], [3, 5], [5], [1], [1, 3], [7]] * 4  # 1, 3, 5, 7 each in and out of >= 4
    targets = presence_targets(labels)
    peaks = torch.zeros(len(labels), 3)
    for i, label in enumerate(labels):
        peaks[i, 0] = 2.0 if 3 in label else 0.0  # channel 0: a detector of 3
        peaks[i, 1] = 0.0 if 5 in label else 1.0  # channel 1: fires on every image *without* 5
        peaks[i, 2] = float(i % 2)  # channel 2: noise
    coverage, best = detector_coverage(peaks, targets, min_count=4)
    assert coverage[3] == 1.0 and best[3] == 0
    assert coverage[5] < 0.75  # silent on 5s is no detector of 5
    assert coverage[1] < 0.9 and coverage[7] < 0.9
    # tokens too rare (0, 2, 4, 6, 8, 9 never occur) are unknown, never "uncovered"
    assert torch.isnan(coverage[0]) and best[0] == -1
    assert uncovered_tokens(coverage, 0.9) == sorted([1, 5, 7], key=lambda t: float(coverage[t]))
    assert 3 not in uncovered_tokens(coverage, 0.9) and 0 not in uncovered_tokens(coverage, 0.9)
    # the same peaks, per channel: selectivity counts firing with or without a token
    assert selectivity(peaks, targets, min_count=4)[1] == 1.0


def test_channel_peaks_are_each_images_strongest_sparse_activation():
    maps = torch.zeros(4, 2, 8, 8)
    maps[1, 0, 3, 3], maps[1, 0, 5, 5], maps[2, 1, 0, 7] = 0.5, 2.0, 1.5
    images = torch.arange(4, dtype=torch.float32)[:, None, None, None].expand(4, 1, 8, 8)
    model = _MapModel(maps).train()
    got = channel_peaks(model, images.contiguous(), batch_size=3)
    assert model.training
    assert got.tolist() == [[0, 0], [2.0, 0], [0, 1.5], [0, 0]]


def test_plan_resampling_by_coverage_aims_at_tokens_without_a_detector(monkeypatch, caplog):
    """The presence head (before the bottleneck) predicts every digit, but no channel marks
    3 or 7 after it: only resample_by_coverage sends fresh channels there."""
    train_module = importlib.import_module("sparling_core.training.loop")
    errors = torch.full((10,), 0.01)
    errors[8] = 0.2  # the worst predicted: an error-ranked plan aims here
    coverage = torch.full((10,), 0.99)
    coverage[3], coverage[7] = 0.52, 0.6
    monkeypatch.setattr(train_module, "presence_errors", lambda *a: errors)
    monkeypatch.setattr(train_module, "sparse_activity", lambda *a: None)
    monkeypatch.setattr(train_module, "channel_peaks", lambda *a: None)
    monkeypatch.setattr(train_module, "presence_targets", lambda *a: None)
    monkeypatch.setattr(train_module, "detector_coverage",
                        lambda *a: (coverage, torch.zeros(10, dtype=torch.long)))
    monkeypatch.setattr(train_module, "find_duplicates", lambda *a, exclude: [
        (d, k) for d, k in [(2, 6), (5, 9), (1, 4)] if d not in exclude and k not in exclude])
    model = SparlingModel(tiny_config())
    by_error = TrainConfig(resample_duplicates=True)
    assert train_module._plan_resampling(model, None, None, by_error, {}, {}) == [(2, 6, 8)]
    config = TrainConfig(resample_duplicates=True, resample_by_coverage=True)
    pending, retries = {}, {}
    rows = train_module._plan_resampling(model, None, None, config, pending, retries)
    assert rows == [(2, 6, 3), (5, 9, 7), (1, 4, 8)]  # least covered first, then by error
    # channel 2 took 3 (covered now: released); channel 5 has not taken 7: drawn again
    coverage[3] = 0.95
    pending, retries = {2: 3, 5: 7}, {5: 1}
    rows = train_module._plan_resampling(model, None, None, config, pending, retries)
    assert rows[0] == (5, -1, 7) and pending == {5: 7} and retries == {5: 1}
    assert (2, 6, 8) in rows
    # retries used up: channel 5 stays, and 7 is not handed to another channel meanwhile
    rows = train_module._plan_resampling(model, None, None, config, {5: 7},
                                         {5: config.resample_max_retries})
    assert rows == [(2, 6, 8)]
    # resample_release_exhausted: channel 5 lets go of 7 and sits this check out; 7 is free
    # again and, being the least covered, goes to the first duplicate not involving 5
    release = TrainConfig(resample_duplicates=True, resample_by_coverage=True,
                          resample_release_exhausted=True)
    pending, retries = {5: 7}, {5: release.resample_max_retries}
    with caplog.at_level(logging.INFO, logger="sparling_core.training.loop"):
        rows = train_module._plan_resampling(model, None, None, release, pending, retries)
    assert rows == [(2, 6, 7), (1, 4, 8)] and pending == {} and retries == {}
    assert f"released channel 5 from digit 7 ({release.resample_max_retries} redraws" in caplog.text
    # with retries left it is still redrawn itself, released or not
    pending, retries = {5: 7}, {5: 1}
    rows = train_module._plan_resampling(model, None, None, release, pending, retries)
    assert rows[0] == (5, -1, 7) and pending == {5: 7} and retries == {5: 1}
    with pytest.raises(ValueError, match="detector_min_coverage"):
        TrainConfig(detector_min_coverage=0.5)


def test_release_exhausted_changes_no_plan_until_a_channel_has_used_up_its_redraws(monkeypatch):
    """What resample_release_exhausted costs a run where no redrawn channel runs out of
    redraws: nothing. Over random checks (coverage, pending channels, their redraw counts
    below the limit), the plan and what it leaves in `pending` and `retries` are the same
    with the option and without it; the first exhausted channel makes them differ."""
    train_module = importlib.import_module("sparling_core.training.loop")
    g = torch.Generator().manual_seed(0)
    state = {}
    monkeypatch.setattr(train_module, "presence_errors", lambda *a: state["errors"])
    monkeypatch.setattr(train_module, "sparse_activity", lambda *a: None)
    monkeypatch.setattr(train_module, "channel_peaks", lambda *a: None)
    monkeypatch.setattr(train_module, "presence_targets", lambda *a: None)
    monkeypatch.setattr(train_module, "detector_coverage",
                        lambda *a: (state["coverage"], torch.zeros(10, dtype=torch.long)))
    monkeypatch.setattr(train_module, "find_duplicates", lambda *a, exclude: [
        (d, k) for d, k in [(2, 6), (5, 9), (1, 4), (0, 8)]
        if d not in exclude and k not in exclude])
    model = SparlingModel(tiny_config())
    plain = TrainConfig(resample_duplicates=True, resample_by_coverage=True)
    release = TrainConfig(resample_duplicates=True, resample_by_coverage=True,
                          resample_release_exhausted=True)
    limit = plain.resample_max_retries

    def plans(pending, retries):
        out = []
        for config in (plain, release):
            p, r = dict(pending), dict(retries)
            out.append((train_module._plan_resampling(model, None, None, config, p, r), p, r))
        return out

    for _ in range(200):
        state["errors"] = torch.rand(10, generator=g) * 0.3
        state["coverage"] = 0.5 + 0.5 * torch.rand(10, generator=g)
        channels = torch.randperm(10, generator=g)[:3].tolist()
        digits = torch.randperm(10, generator=g)[:3].tolist()
        pending = dict(zip(channels, digits, strict=True))
        retries = {c: int(torch.randint(0, limit, (1,), generator=g)) for c in channels}
        without, with_release = plans(pending, retries)
        assert with_release == without
    # one pending channel at the limit on a digit still uncovered: now they differ
    state["coverage"] = torch.full((10,), 0.99)
    state["coverage"][7] = 0.5
    without, with_release = plans({5: 7}, {5: limit})
    assert without != with_release and with_release[1] == {}


def test_validation_history_records_detector_coverage(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), model=tiny_config(), batch_size=4, val_every=8,
                      val_size=40, max_samples=16, bf16=False, channels_last=False,
                      threads=1), progress=False)
    ckpt = load_checkpoint(out)
    for row in ckpt.history:
        assert len(row["coverage"]) == 10
        assert all(c is None or 0.5 <= c <= 1 for c in row["coverage"])
        assert row["uncovered"] == uncovered_tokens(
            torch.tensor([float("nan") if c is None else c for c in row["coverage"]]), 0.9)
    # what the loop logged is what the saved model gives on the same validation images
    from sparling_core.domains import get_domain
    domain = get_domain(ckpt.model.config.domain)
    images, labels = domain.batch(domain.samples(domain.split_range("val")[:40], "val"))
    coverage, _ = detector_coverage(channel_peaks(ckpt.model, images), presence_targets(labels))
    assert ckpt.history[-1]["coverage"] == [
        None if torch.isnan(c) else round(float(c), 3) for c in coverage]
