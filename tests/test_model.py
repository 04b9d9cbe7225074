"""The model's decoders: shapes, the channel decoder's angular order, gradients, configs."""

import math
import pathlib
import sys

import pytest
import torch
import torch.nn.functional as F

from sparling_core.domains import digit_circle as dc
from sparling_core.models.sparling import (  # noqa: E402
    EOS,
    IGNORE,
    ChannelDecoder,
    ModelConfig,
    SparlingModel,
    encode_labels,
)

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from helpers import tiny_config  # noqa: E402


def _points(places: dict[int, tuple[int, int]], channels: int = 10, size: int = 100):
    """A sparse map with one activation per channel at the given (row, col)."""
    m = torch.zeros(1, channels, size, size)
    for c, (r, col) in places.items():
        m[0, c, r, col] = 1.0
    return m


@pytest.mark.parametrize("decoder", ["channels", "cells"])
def test_both_decoders_train_and_generate(decoder):
    model = SparlingModel(tiny_config(decoder=decoder))
    images, labels = dc.collate([dc.sample(s) for s in range(3)])
    inputs, targets = encode_labels(labels, 6)
    out = model(images, inputs)
    assert out.logits.shape == (3, 7, EOS + 1)
    loss = F.cross_entropy(out.logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
    loss.backward()
    assert model.motif_model.head.weight.grad.abs().sum() > 0
    model.eval()
    decoded = model.generate(images)
    assert len(decoded.sequences) == 3
    assert all(1 <= len(s) <= 7 and all(0 <= d <= 9 for d in s) for s in decoded.sequences)


def test_unknown_decoder_is_rejected():
    with pytest.raises(ValueError, match="decoder must be one of"):
        ModelConfig(decoder="lstm")


def test_channel_decoder_orders_firing_channels_by_angle():
    dec = ChannelDecoder(10, 100, 16, 2, 1, 1, 7)
    # four channels on a circle around (50, 50); the label's angle grows from the row axis
    # (down) towards the column axis (right): down -> right -> up -> left
    by_angle = {}
    for c, a in zip([7, 2, 9, 4], [0.0, 0.5 * math.pi, math.pi - 0.1, 1.5 * math.pi],
                    strict=True):
        by_angle[c] = (round(50 + 30 * math.cos(a)), round(50 + 30 * math.sin(a)))
    _, order, present = dec.summarise(_points(by_angle))
    assert present[0].nonzero().flatten().tolist() == [2, 4, 7, 9]
    firing = order[0, :4].tolist()
    silent = order[0, 4:].tolist()
    assert sorted(silent) == [0, 1, 3, 5, 6, 8]
    # the cyclic order is 7, 2, 9, 4 whatever the starting point atan2 picks
    start = firing.index(7)
    assert firing[start:] + firing[:start] == [7, 2, 9, 4]


def test_channel_decoder_masks_silent_channels_and_survives_an_empty_map():
    dec = ChannelDecoder(10, 100, 16, 2, 1, 1, 7)
    memory, mask = dec.encode(_points({3: (20, 20), 5: (80, 80)}))
    assert memory.shape == (1, 10, 16)
    assert mask[0].tolist() == [False, False] + [True] * 8
    memory, mask = dec.encode(torch.zeros(2, 10, 100, 100))
    assert torch.isfinite(memory).all()
    assert not mask[:, 0].any()  # one key left, so attention has no all-masked row


def test_channel_decoder_passes_gradient_to_the_active_values():
    dec = ChannelDecoder(10, 100, 16, 2, 1, 1, 7)
    motifs = _points({1: (30, 40), 6: (70, 60), 8: (50, 20)}).requires_grad_()
    memory, mask = dec.encode(motifs)
    inputs, _ = encode_labels([[1, 8, 6]], 6)
    dec(memory, mask, inputs).sum().backward()
    grad = motifs.grad[0]
    assert grad[1, 30, 40] != 0 and grad[6, 70, 60] != 0 and grad[8, 50, 20] != 0
    # the places matter too: a zero pixel next to an active one gets a gradient
    assert grad[1, 30, 41] != 0


def test_cyclic_neighbours_give_each_firing_token_its_predecessor_and_successor():
    dec = ChannelDecoder(5, 100, 5, 1, 1, 1, 7, cyclic_neighbours=True)
    with torch.no_grad():  # before: identity; after: 10 x identity, no biases
        dec.before_proj.weight.copy_(torch.eye(5))
        dec.after_proj.weight.copy_(10 * torch.eye(5))
        dec.before_proj.bias.zero_()
        dec.after_proj.bias.zero_()
    tokens = torch.eye(5)[None]  # slot i is the one-hot e_i; the first 3 fire
    got = dec._neighbours(tokens, torch.tensor([3]))[0]
    e = torch.eye(5)
    assert torch.equal(got[0], e[2] + 10 * e[1])  # cyclic: before slot 0 is slot 2
    assert torch.equal(got[1], e[0] + 10 * e[2])
    assert torch.equal(got[2], e[1] + 10 * e[0])
    assert not got[3:].any()  # silent slots get nothing
    one = dec._neighbours(tokens, torch.tensor([1]))[0]
    assert torch.equal(one[0], e[0] + 10 * e[0]) and not one[1:].any()  # its own neighbour


def test_cyclic_neighbours_change_the_memory_and_keep_gradients():
    torch.manual_seed(0)
    plain = ChannelDecoder(10, 100, 16, 2, 1, 1, 7)
    torch.manual_seed(0)
    linked = ChannelDecoder(10, 100, 16, 2, 1, 1, 7, cyclic_neighbours=True)
    motifs = _points({1: (30, 40), 6: (70, 60), 8: (50, 20)}).requires_grad_()
    a, mask_a = plain.encode(motifs)
    b, mask_b = linked.encode(motifs)
    assert torch.equal(mask_a, mask_b) and not torch.allclose(a, b)
    inputs, _ = encode_labels([[1, 8, 6]], 6)
    linked(b, mask_b, inputs).sum().backward()
    assert linked.after_proj.weight.grad.abs().sum() > 0
    assert motifs.grad[0, 6, 70, 60] != 0


def test_cyclic_neighbours_are_off_by_default_and_only_for_the_channel_decoder():
    assert not ModelConfig().cyclic_neighbours
    assert not hasattr(SparlingModel(tiny_config()).decoder, "after_proj")
    assert hasattr(SparlingModel(tiny_config(cyclic_neighbours=True)).decoder, "after_proj")
    with pytest.raises(ValueError, match="cyclic_neighbours is an option of the 'channels'"):
        ModelConfig(decoder="points", cyclic_neighbours=True)
    with pytest.raises(ValueError, match="cyclic_neighbours must be true or false"):
        ModelConfig(cyclic_neighbours=1)


@pytest.mark.slow
def test_channel_decoder_learns_the_cyclic_order_from_perfect_maps():
    """On ground-truth point maps the decoder alone learns the task (oracle check)."""
    torch.manual_seed(0)
    dec = ChannelDecoder(10, 100, 64, 4, 2, 2, 7)
    opt = torch.optim.Adam(dec.parameters(), lr=2e-3)

    def maps(samples):
        m = torch.zeros(len(samples), 10, 100, 100)
        for i, s in enumerate(samples):
            for motif in s.motifs:
                m[i, motif.digit, motif.center[0], motif.center[1]] = 1.0
        return m

    for step in range(1200):
        batch = [dc.sample(step * 32 + i) for i in range(32)]
        inputs, targets = encode_labels([s.label for s in batch], 6)
        memory, mask = dec.encode(maps(batch))
        loss = F.cross_entropy(dec(memory, mask, inputs).flatten(0, 1), targets.flatten(),
                               ignore_index=IGNORE)
        opt.zero_grad()
        loss.backward()
        opt.step()
    val = [dc.sample(dc.VALIDATION_SEEDS_START + i) for i in range(300)]
    inputs, targets = encode_labels([s.label for s in val], 6)
    with torch.no_grad():
        memory, mask = dec.encode(maps(val))
        predicted = dec(memory, mask, inputs).argmax(-1)
    token_accuracy = (predicted == targets)[targets != IGNORE].float().mean().item()
    assert token_accuracy > 0.95


def test_phase_tied_motif_model_is_equivariant_to_one_pixel_shifts():
    from sparling_core.models.sparling import MotifModel

    torch.manual_seed(0)
    images = (torch.rand(2, 1, 40, 40) < 0.3).float()
    for tied in (False, True):
        model = MotifModel(3, 8, 2, phase_tied=tied).eval()
        with torch.no_grad():
            out = model(images)
            assert out.shape == (2, 3, 40, 40)
            for dr, dc in ((0, 1), (1, 0), (1, 1)):
                shifted = torch.zeros_like(images)
                shifted[:, :, dr:, dc:] = images[:, :, : 40 - dr, : 40 - dc]
                moved = model(shifted)
                # away from the borders, the output moves with the image
                same = torch.allclose(moved[:, :, 10 + dr:30 + dr, 10 + dc:30 + dc],
                                      out[:, :, 10:30, 10:30], atol=1e-5)
                assert same == tied, (tied, dr, dc)


def test_phase_tied_motif_model_is_the_half_resolution_model_on_shifted_copies():
    """Output pixel (2i + a, 2j + b) is the half-resolution model's phase-(0, 0) output on
    the image shifted by (a, b); the shifted-copy form (run in CPU chunks, 11 images: a
    remainder chunk) equals the dilated-convolution form, values and gradients."""
    import torch.nn.functional as F

    from sparling_core.models.sparling import MotifModel

    torch.manual_seed(0)
    images = (torch.rand(11, 1, 20, 24) < 0.3).float()
    model = MotifModel(3, 8, 3, phase_tied=True)
    out = model(images)
    for a in (0, 1):
        for b in (0, 1):
            copy = F.pad(images, (0, 1, 0, 1))[:, :, a:a + 20, b:b + 24]
            with torch.no_grad():
                half = model._half_resolution(copy)
            assert torch.allclose(out[:, :, a::2, b::2], half[:, :, 0::2, 0::2], atol=1e-5)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    reference = model._all_phases_dilated(images)
    assert torch.allclose(out, reference, atol=1e-5)
    (reference * weights).sum().backward()
    for grad, p in zip(grads, model.parameters(), strict=True):
        assert torch.allclose(grad, p.grad, rtol=1e-4, atol=1e-4)
    model.eval()  # one image at a time: the same bits alone and in a batch
    with torch.no_grad():
        assert torch.equal(model(images[3:4]), model(images)[3:4])


def test_point_decoder_channel_summaries_reach_every_active_pixel():
    """With max_points 4 and 60 active pixels, the top-k tokens alone pass gradient to 4
    pixels; the per-channel summary tokens pass it to every active pixel (a dense early map
    trains the motif model); silent channels' summaries are masked."""
    from sparling_core.models.sparling import ModelConfig, SparlingModel

    torch.manual_seed(0)
    maps = torch.zeros(2, 3, 20, 20)
    maps[0, 0].view(-1)[torch.randperm(400)[:40]] = torch.rand(40) + 0.1
    maps[0, 1].view(-1)[torch.randperm(400)[:20]] = torch.rand(20) + 0.1
    inputs = torch.full((2, 3), 11, dtype=torch.long)
    reached = {}
    for summaries in (False, True):
        config = ModelConfig(image_size=20, motif_channels=3, decoder="points", max_points=4,
                             channel_summaries=summaries, d_model=16, n_heads=2)
        model = SparlingModel(config)
        x = maps.clone().requires_grad_(True)
        memory, mask = model.decoder.encode(x)
        model.decoder(memory, mask, inputs).sum().backward()
        reached[summaries] = int((x.grad[maps > 0] != 0).sum())
        if summaries:
            assert mask.shape == (2, 4 + 3)
            assert mask[0, 4:].tolist() == [False, False, True]  # channel 2 is silent
    assert reached[False] == 4 and reached[True] == 60
    with pytest.raises(ValueError, match="channel_summaries"):
        ModelConfig(decoder="points", channel_summaries="yes")
    assert ModelConfig.from_dict(
        ModelConfig(channel_summaries=True).to_dict()).channel_summaries is True


def test_presence_pool_sets_how_many_pixels_the_presence_loss_reaches():
    """max: one pixel per channel and image gets the presence gradient; mean and max+mean:
    every pixel. The pooled values are what the option says, the default is max (every
    earlier checkpoint trained so), and a bad value is refused with the field's name."""
    torch.manual_seed(0)
    dense = torch.randn(2, 10, 100, 100)
    reached, logits = {}, {}
    for pool in ("max", "mean", "max+mean"):
        model = SparlingModel(ModelConfig(presence_pool=pool))
        with torch.no_grad():
            model.presence.weight.copy_(torch.eye(10))
            model.presence.bias.zero_()
        x = dense.clone().requires_grad_(True)
        logits[pool] = model.presence_logits(x)
        logits[pool].sum().backward()
        reached[pool] = int((x.grad != 0).sum())
    assert reached == {"max": 2 * 10, "mean": 2 * 10 * 100 * 100,
                       "max+mean": 2 * 10 * 100 * 100}
    assert torch.allclose(logits["max"], dense.amax(dim=(2, 3)))
    assert torch.allclose(logits["mean"], dense.mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(logits["max+mean"], logits["max"] + logits["mean"], atol=1e-6)
    assert ModelConfig().presence_pool == "max"
    assert ModelConfig.from_dict({"presence_pool": "mean"}).presence_pool == "mean"
    with pytest.raises(ValueError, match="presence_pool"):
        ModelConfig(presence_pool="median")
    with pytest.raises(ValueError, match="presence_pool"):
        ModelConfig(presence_pool=3)


def test_presence_errors_use_the_models_presence_pool():
    """The resampler's per-digit presence errors read the same pooled signal as training."""
    from sparling_core.training.resample import presence_errors

    images, labels = dc.collate([dc.sample(s) for s in range(4)])
    errors = {}
    for pool in ("max", "mean"):
        torch.manual_seed(0)
        model = SparlingModel(tiny_config(presence_pool=pool))
        model.eval()
        with torch.no_grad():
            expected = F.binary_cross_entropy_with_logits(
                model.presence_logits(model.motif_model(images)),
                torch.stack([F.one_hot(torch.tensor(lab), 10).amax(0).float()
                             for lab in labels]), reduction="none").mean(0)
        errors[pool] = presence_errors(model, images, labels)
        assert torch.allclose(errors[pool], expected, atol=1e-6)
    assert not torch.allclose(errors["max"], errors["mean"])


def _trunk_by_hand(model, images: torch.Tensor, pool: str) -> torch.Tensor:
    """The trunk presence head's logits computed directly: the trunk on each 1-px shift of
    the image (phase-tied) or on the image (untied), the 1x1 head, pooled over everything."""
    mm = model.motif_model
    n, _, h, w = images.shape
    padded = F.pad(images * 2 - 1, (0, 1, 0, 1), value=-1.0)
    shifts = [(0, 0)] if not mm.phase_tied else [(a, b) for a in (0, 1) for b in (0, 1)]
    maps = []
    for a, b in shifts:
        x = F.pixel_unshuffle(padded[:, :, a:a + h, b:b + w], 2)
        maps.append(mm.trunk_presence(F.relu(mm.blocks(mm.stem(x)))).flatten(2))
    x = torch.cat(maps, -1)
    return {"max": x.amax(-1), "mean": x.mean(-1), "max+mean": x.amax(-1) + x.mean(-1)}[pool]


@pytest.mark.parametrize("phase_tied", [False, True])
@pytest.mark.parametrize("pool", ["max", "max+mean"])
def test_trunk_presence_head_pools_the_trunk_over_every_shift(phase_tied, pool):
    """trunk_presence_weight > 0 adds a 1x1 head (vocab_size outputs) on the motif model's
    trunk, pooled like presence_pool over all places (and, phase-tied, all four shifts); the
    training forward returns its logits, equal whatever chunks the images run in, and the
    motif map is unchanged by it."""
    torch.manual_seed(0)
    config = tiny_config(phase_tied=phase_tied, presence_pool=pool, trunk_presence_weight=1.0)
    model = SparlingModel(config)
    images, labels = dc.collate([dc.sample(s) for s in range(3)])
    inputs, _ = encode_labels(labels, 6)
    out = model(images, inputs)
    assert out.trunk_presence_logits.shape == (3, 10)
    with torch.no_grad():
        expected = _trunk_by_hand(model, images, pool)
    assert torch.allclose(out.trunk_presence_logits, expected, atol=1e-5)
    model.eval()  # eval runs the phase-tied model one image at a time
    with torch.no_grad():
        dense, trunk = model.motif_model(images, trunk=True)
        assert torch.allclose(trunk, expected, atol=1e-5)
        assert torch.equal(dense, model.motif_model(images))
    out.trunk_presence_logits.sum().backward()
    assert model.motif_model.trunk_presence.weight.grad.abs().sum() > 0
    assert model.motif_model.stem.weight.grad.abs().sum() > 0


def test_no_trunk_presence_head_by_default():
    """Off by default: no extra weights (every earlier checkpoint's state dict loads as it
    is), no logits, and asking the motif model for them is an error; the weight is checked."""
    model = SparlingModel(tiny_config())
    assert model.motif_model.trunk_presence is None
    assert not any("trunk_presence" in k for k in model.state_dict())
    images, labels = dc.collate([dc.sample(0)])
    assert model(images, encode_labels(labels, 6)[0]).trunk_presence_logits is None
    with pytest.raises(ValueError, match="trunk presence head"):
        model.motif_model(images, trunk=True)
    with pytest.raises(ValueError, match="trunk_presence_weight"):
        ModelConfig(trunk_presence_weight=-1.0)
    with pytest.raises(ValueError, match="trunk_presence_weight"):
        ModelConfig(trunk_presence_weight="1")


def test_relative_point_encoder_sees_displacements_only():
    """RelativePointEncoder: the same output when every point moves by the same offset
    (translation-equivariant) or when the points are listed in another order
    (permutation-equivariant); a masked point changes nothing; moving one point changes the
    others' outputs (attention sees where it is), which the set encoder only sees through
    each token's own place."""
    from sparling_core.models.sparling import RelativePointEncoder

    torch.manual_seed(0)
    enc = RelativePointEncoder(d_model=16, n_heads=2, layers=2).eval()
    tokens = torch.randn(2, 5, 16)
    place = torch.rand(2, 5, 2)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1, 3:] = True
    with torch.no_grad():
        out = enc(tokens, place, mask)
        shifted = enc(tokens, place + torch.tensor([0.13, -0.07]), mask)
        order = torch.tensor([4, 2, 0, 1, 3])
        permuted = enc(tokens[:, order], place[:, order], mask[:, order])
        other = tokens.clone()
        other[1, 3:] = torch.randn(2, 16)  # the masked points of image 1
        masked = enc(other, place, mask)
        moved_place = place.clone()
        moved_place[0, 4] += 0.3
        moved = enc(tokens, moved_place, mask)
    torch.testing.assert_close(shifted, out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(permuted, out[:, order], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(masked[1, :3], out[1, :3])
    assert (moved[0, :4] - out[0, :4]).abs().max() > 1e-3


def test_points_decoder_with_the_relative_encoder_trains_and_round_trips(tmp_path):
    """`"point_encoder": "relative"` builds RelativePointEncoder into the points decoder
    (channel summaries included: their places are the channels' mean places), passes the
    gradient to the map's values, saves and loads; "set" stays the default; bad names fail."""
    from sparling_core.checkpoint import load_checkpoint, save_checkpoint
    from sparling_core.models.sparling import RelativePointEncoder

    torch.manual_seed(0)
    config = ModelConfig(image_size=20, motif_channels=3, decoder="points", max_points=4,
                         channel_summaries=True, point_encoder="relative", d_model=16,
                         n_heads=2)
    model = SparlingModel(config)
    assert isinstance(model.decoder.encoder, RelativePointEncoder)
    maps = torch.zeros(2, 3, 20, 20)
    maps[0, 0, 3, 4], maps[0, 2, 15, 9], maps[1, 1, 10, 10] = 0.5, 1.0, 2.0
    x = maps.clone().requires_grad_(True)
    memory, mask = model.decoder.encode(x)
    assert memory.shape == (2, 4 + 3, 16) and torch.isfinite(memory).all()
    inputs = torch.full((2, 3), 11, dtype=torch.long)
    model.decoder(memory, mask, inputs).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[maps > 0] != 0).all()
    save_checkpoint(tmp_path / "ck", model)
    loaded = load_checkpoint(tmp_path / "ck").model.eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.decoder.encode(maps)[0], model.decoder.encode(maps)[0])
    assert ModelConfig().point_encoder == "set"
    with pytest.raises(ValueError, match="point_encoder"):
        ModelConfig(decoder="points", point_encoder="graph")



def test_decoding_stops_when_every_map_has_ended_and_answers_as_a_full_run(monkeypatch):
    from sparling_core.checkpoint import load_checkpoint
    model = load_checkpoint(pathlib.Path(__file__).parent.parent / "checkpoints"
                            / "digit-circle-mt").model.eval()
    steps = []
    forward = type(model.decoder).forward
    monkeypatch.setattr(type(model.decoder), "forward",
                        lambda self, *a, **k: steps.append(a[2].shape[1]) or forward(self, *a, **k))
    images, _ = dc.collate([dc.sample(dc.TEST_SEEDS_START + i) for i in range(6)])
    with torch.no_grad():
        motifs = model.sparse_motifs(images)
        full = model.decode_motifs(motifs, stop_early=False)
        assert steps == list(range(1, model.config.max_digits + 2))
        steps.clear()
        early = model.decode_motifs(motifs)
    assert early == full  # bit for bit
    longest = max(len(s) for s in early[0])
    assert longest < model.config.max_digits  # these images' labels are short enough
    assert steps == list(range(1, longest + 2))  # one step per token and one for the end
    assert all(len(p) == len(s) + 1 for s, p in zip(*early, strict=True))  # end token's too
