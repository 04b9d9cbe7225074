import pytest
import sparling
import torch

from sparling_core.layers.sparsity import (
    KLSparsity,
    L1Sparsity,
    SpatialSparsity,
    TopKSparsity,
    _rth_largest_per_row,
    make_sparsity_layer,
)

SCHEDULE = [0.5, 0.5, 0.9, 0.99, 0.995, 0.999, 0.9999, 0.99995, 1 - 5.0226e-5, 1 - 5.0226e-5]


def _reference(per_channel: bool, channels: int):
    spec = {"type": "EnforceSparsityPerChannel2D" if per_channel else "EnforceSparsityUniversally"}
    return sparling.SparseLayerWithBatchNorm(spec, starting_sparsity=0.5, channels=channels,
                                             affine=True)


@pytest.mark.parametrize("per_channel", [True, False], ids=["MT", "ST"])
@pytest.mark.parametrize("shape", [(8, 10, 30, 40), (2, 3, 100, 100)])
def test_matches_reference_package(per_channel, shape, capsys):
    torch.manual_seed(0)
    ref = _reference(per_channel, shape[1])
    ours = SpatialSparsity(shape[1], 0.5, per_channel=per_channel)
    with torch.no_grad():  # non-trivial affine parameters, shared
        ref.batch_norm.weight.uniform_(0.5, 2)
        ref.batch_norm.bias.uniform_(-1, 1)
    ours.batch_norm.load_state_dict(ref.batch_norm.state_dict())
    for sparsity in SCHEDULE:
        ref.sparsity = sparsity
        ours.set_sparsity(sparsity)
        x = torch.randn(shape) * 2 + 1
        y_ref, y_ours = ref(x), ours(x)
        t_ref = ref.underlying_enforcer.underlying_enforcer.thresholds
        assert torch.allclose(t_ref, ours.thresholds, atol=1e-6, rtol=0)
        assert torch.allclose(y_ref, y_ours, atol=1e-6, rtol=0)
    ref.eval()
    ours.eval()
    x = torch.randn(shape)
    assert torch.allclose(ref(x), ours(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("r", [1, 2, 5, 64, 65, 1000, 30_000])
def test_rth_largest_matches_kthvalue(r):
    torch.manual_seed(r)
    values = torch.randn(3, 4, 20_000)  # (N, C, L)
    flat = values.transpose(0, 1).reshape(4, -1)
    expected = flat.kthvalue(flat.shape[1] - r + 1, dim=1).values
    assert torch.equal(_rth_largest_per_row(values, r), expected)


@pytest.mark.parametrize("density, tolerance", [(0.5, 0.02), (5e-3, 0.15), (5e-5, 0.4)])
@pytest.mark.parametrize("per_channel", [True, False], ids=["MT", "ST"])
def test_density_achieved(density, tolerance, per_channel):
    torch.manual_seed(1)
    layer = SpatialSparsity(4, 1 - density, per_channel=per_channel)
    scale = torch.tensor([1.0, 2.0, 0.5, 3.0]).view(1, 4, 1, 1)
    for _ in range(60):  # let the momentum settle (0.9 ** 60 = 0.2%)
        layer(torch.randn(32, 4, 100, 100) * scale)
    realised = torch.stack([(layer(torch.randn(32, 4, 100, 100) * scale) > 0).float().mean()
                            for _ in range(6)]).mean().item()
    assert realised == pytest.approx(density, rel=tolerance)


def test_mt_balances_channels_where_st_does_not():
    torch.manual_seed(2)
    scale = torch.tensor([1.0, 4.0]).view(1, 2, 1, 1)
    mt = SpatialSparsity(2, 0.99, batch_norm=False)
    st = SpatialSparsity(2, 0.99, per_channel=False, batch_norm=False)
    for _ in range(50):
        x = torch.randn(16, 2, 50, 50) * scale
        y_mt, y_st = mt(x), st(x)
    per_channel = lambda y: (y > 0).float().mean(dim=(0, 2, 3))  # noqa: E731
    assert per_channel(y_mt)[0] > 0.005  # both channels keep ~1%
    assert per_channel(y_st)[0] < 0.2 * per_channel(y_st)[1]  # the louder channel wins


def test_three_dimensional_input_matches_four_dimensional():
    torch.manual_seed(3)
    a, b = SpatialSparsity(5, 0.9), SpatialSparsity(5, 0.9)
    for _ in range(3):
        x = torch.randn(4, 5, 300)
        y3, y4 = a(x), b(x.unsqueeze(2))
        assert y3.shape == (4, 5, 300)
        assert torch.equal(y3, y4.squeeze(2))
    with pytest.raises(ValueError, match="expected"):
        a(torch.randn(4, 5))
    with pytest.raises(ValueError, match="channels"):
        a(torch.randn(4, 6, 10))


def test_state_dict_round_trip_and_eval_freezes():
    torch.manual_seed(4)
    layer = SpatialSparsity(3, 0.999)
    for _ in range(5):
        layer(torch.randn(8, 3, 20, 20))
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    assert {"thresholds", "sparsity", "batch_norm.running_mean"} <= set(state)
    restored = SpatialSparsity(3, 0.5)
    restored.load_state_dict(layer.state_dict())
    assert restored.density == pytest.approx(0.001)
    assert torch.equal(restored.thresholds, layer.thresholds)
    restored.eval()
    x = torch.randn(8, 3, 20, 20)
    for _ in range(3):
        restored(x)
    for key, value in restored.state_dict().items():
        assert torch.equal(value, state[key]), key
    layer.eval()
    assert torch.equal(layer(x), restored(x))


def test_accumulated_estimator_pools_batches():
    torch.manual_seed(5)
    density, survivors = 1e-3, 10.0  # 10 / 1e-3 = 10,000 values per channel per update
    layer = SpatialSparsity(2, 1 - density, batch_norm=False, momentum=1.0,
                            accumulate_survivors=survivors)
    batches = [torch.randn(1, 2, 40, 50) for _ in range(5)]  # 2,000 values per channel each
    for x in batches[:4]:
        layer(x)
        assert torch.equal(layer.thresholds, torch.zeros(2))  # still pooling
    layer(batches[4])
    pooled = torch.cat([b.reshape(2, -1) for b in batches], dim=1)  # (C, 10,000)
    k = max(1, int(pooled.shape[1] * (1 - density)))
    assert torch.allclose(layer.thresholds, pooled.kthvalue(k, dim=1).values)
    assert layer._pool == []


def test_baselines_share_the_interface():
    torch.manual_seed(6)
    x = torch.randn(4, 3, 10, 10)
    l1 = L1Sparsity(3, weight=2.0)
    y = l1(x)
    assert (y >= 0).all() and l1.penalty(y).item() == pytest.approx(2.0 * y.abs().mean().item())
    kl = KLSparsity(3, weight=1.0)
    y = kl(x)
    assert ((y > 0) & (y < 1)).all()
    assert torch.equal(kl.active(y), y > 0.5)
    assert kl.penalty(y).item() > 0
    assert kl.penalty(torch.full_like(y, 5.02e-5)).item() == pytest.approx(0.0, abs=1e-6)
    topk = TopKSparsity(3, 1 - 0.01)
    y = topk(x)
    assert ((y > 0).sum(dim=(1, 2, 3)) == 3).all()  # ceil(0.01 * 300) per sample
    for kind in ("mt", "st", "l1", "kl", "topk", "none"):
        layer = make_sparsity_layer(kind, 3, 0.9)
        assert layer(x).shape == x.shape and layer.penalty(layer(x)).dim() == 0
    with pytest.raises(ValueError, match="unknown sparsity kind"):
        make_sparsity_layer("dropout", 3)
    with pytest.raises(ValueError):
        SpatialSparsity(3, 1.5)
