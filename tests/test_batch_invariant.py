"""Batch-invariant decoding (`sparling_core.models.batch_invariant`): a map's answer is the
same bit for bit alone or batched with any others, for every decoder kind, and equals the
default decoding up to float rounding."""

import itertools

import pytest
import torch
from torch import nn

from sparling_core.models import batch_invariant as bi
from sparling_core.models.sparling import ModelConfig, SparlingModel

DECODERS = {
    "channels": dict(decoder="channels"),
    "channels+neighbours": dict(decoder="channels", cyclic_neighbours=True),
    "cells": dict(decoder="cells"),
    "points": dict(decoder="points"),
    "points+summaries": dict(decoder="points", channel_summaries=True),
    "points-relative": dict(decoder="points", point_encoder="relative"),
}


def _model(kind: str) -> SparlingModel:
    torch.manual_seed(0)
    config = ModelConfig(image_size=40, motif_width=8, motif_layers=2, d_model=32, n_heads=4,
                         encoder_layers=2, decoder_layers=2, max_points=12, **DECODERS[kind])
    return SparlingModel(config).eval()


def _maps(n: int, channels: int = 10, size: int = 40, seed: int = 1) -> torch.Tensor:
    """Sparse maps like the bottleneck's: a few positive activations each, one empty map."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.zeros(n, channels, size, size)
    for i in range(1, n):
        k = 1 + i % 6
        idx = torch.randint(0, channels * size * size, (k,), generator=g)
        maps[i].view(-1)[idx] = 0.5 + torch.rand(k, generator=g) * 3
    return maps


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("kind", sorted(DECODERS))
def test_a_maps_answer_is_the_same_bits_alone_and_in_any_batch(kind, threads):
    model = _model(kind)
    maps = _maps(11)
    with torch.inference_mode():
        alone = [model.decode_motifs(maps[i:i + 1], batch_invariant=True) for i in range(11)]
        for size in (2, 3, 4, 8, 11):
            for start in range(0, 11, size):
                seqs, probs = model.decode_motifs(maps[start:start + size], batch_invariant=True)
                for j, (seq, prob) in enumerate(zip(seqs, probs, strict=True)):
                    assert seq == alone[start + j][0][0], (size, start + j)
                    assert prob == alone[start + j][1][0], (size, start + j)  # exact floats
        # and in another order, next to copies of itself
        order = torch.tensor([5, 5, 0, 9, 2, 5])
        seqs, probs = model.decode_motifs(maps[order], batch_invariant=True)
        assert [p for p in probs] == [alone[i][1][0] for i in order.tolist()]


@pytest.mark.parametrize("kind", sorted(DECODERS))
def test_the_invariant_decode_equals_the_default_one_up_to_rounding(kind):
    model = _model(kind)
    maps = _maps(9, seed=3)
    with torch.inference_mode():
        default = model.decode_motifs(maps, stop_early=False)
        invariant = model.decode_motifs(maps, stop_early=False, batch_invariant=True)
    assert invariant[0] == default[0]
    for a, b in zip(invariant[1], default[1], strict=True):
        assert a == pytest.approx(b, abs=1e-5)


def test_the_plain_multiply_does_depend_on_the_batch(threads):
    """Why the module exists: on this torch, F.linear on rows of 1 sample and of several
    differs in the last bits for some shapes (which ones depends on the CPU: a grid of
    small ones, as the decoders have); the per-sample product never does, inside the
    context (which runs torch on one thread)."""
    torch.manual_seed(0)
    plain_differs = 0
    for rows, k, m in itertools.product((1, 5, 10), (16, 32, 128), (32, 64, 96)):
        weight, bias = torch.randn(m, k), torch.randn(m)
        x = torch.randn(8, rows, k)
        plain_differs += any(
            not torch.equal(nn.functional.linear(x[:n], weight, bias)[:1],
                            nn.functional.linear(x[:1], weight, bias)) for n in range(2, 9))
        with bi.batch_invariant():
            ours = [bi.linear(x[:n], weight, bias)[:1] for n in range(1, 9)]
        assert all(torch.equal(o, ours[0]) for o in ours), (rows, k, m)
        assert torch.allclose(ours[0], nn.functional.linear(x[:1], weight, bias), atol=1e-4)
    assert plain_differs


def test_the_context_runs_torch_on_one_thread_and_restores_the_count(threads):
    with bi.batch_invariant():
        assert torch.get_num_threads() == 1
        with bi.batch_invariant(False):  # off: leaves the count as it finds it
            assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == threads
    with pytest.raises(RuntimeError), bi.batch_invariant():
        raise RuntimeError("the count is restored on the way out of an error too")
    assert torch.get_num_threads() == threads


def test_the_layers_are_the_torch_layers_outside_the_context():
    torch.manual_seed(0)
    layer = bi.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True,
                                       norm_first=True).eval()
    plain = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True,
                                       norm_first=True).eval()
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(3, 5, 16)
    mask = torch.tensor([[False] * 5, [False, False, True, True, True], [False] * 4 + [True]])
    with torch.inference_mode():
        assert torch.equal(layer(x, src_key_padding_mask=mask),
                           plain(x, src_key_padding_mask=mask))
        with bi.batch_invariant():
            assert bi.enabled()
            inside = layer(x, src_key_padding_mask=mask)
        assert not bi.enabled()
    assert torch.allclose(inside, plain(x, src_key_padding_mask=mask), atol=1e-5)
    with pytest.raises(NotImplementedError, match="pre-norm"), bi.batch_invariant():
        bi.TransformerEncoderLayer(16, 2, 32, batch_first=True)(x)


def test_a_checkpoint_saved_before_loads_into_the_new_layers():
    """Same parameter names: the shipped checkpoints load as they are."""
    model = _model("points-relative")
    assert not bi.uses_plain_layers(model.decoder)
    names = set(model.state_dict())
    assert "decoder.encoder.layers.0.qkv.weight" in names
    assert "decoder.head.out.weight" in names


def test_the_context_holds_for_its_own_thread_only():
    import threading

    seen = []
    with bi.batch_invariant():
        t = threading.Thread(target=lambda: seen.append(bi.enabled()))
        t.start()
        t.join()
        assert bi.enabled()
    assert seen == [False]
