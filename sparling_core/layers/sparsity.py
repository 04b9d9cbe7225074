"""Sparsity bottlenecks: Sparling's spatial sparsity layer (MT, ST) and baselines.

All layers take `(N, C, H, W)` or `(N, C, L)` inputs, return the same shape, and share
one interface:

- `sparsity` / `density` (a buffer, so `state_dict` carries it), set by the schedule;
- `penalty(y)`: the extra loss term (zero for MT / ST / TopK);
- `active(y)`: the boolean mask of activations that count as "on".

MT and ST follow SPEC 1.1 / 1.2: BatchNorm in front, then `relu(x - t)` where `t` tracks
the batch quantile at the target sparsity with momentum 0.1. They match `sparling==0.3.0`
(`SparseLayerWithBatchNorm` over `EnforceSparsityPerChannel2D` / `EnforceSparsityUniversally`)
to 1e-6, but select thresholds without a full k-th-value pass where few values survive.
Under torch.distributed (more than one process) their BatchNorm and thresholds use the
global batch: see global_stats.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .global_stats import global_batch_norm, global_rth_largest, global_sum, process_group

__all__ = [
    "SparsityLayer",
    "SpatialSparsity",
    "L1Sparsity",
    "KLSparsity",
    "TopKSparsity",
    "NoSparsity",
    "make_sparsity_layer",
    "SPARSITY_KINDS",
]


def _as_4d(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 4:
        return x
    if x.dim() == 3:
        return x.unsqueeze(2)  # (N, C, L) -> (N, C, 1, L): same BatchNorm statistics
    raise ValueError(f"expected (N, C, H, W) or (N, C, L) input, got shape {tuple(x.shape)}")


def _normalise(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """`bn(x)`; in training mode under torch.distributed (more than one process), with the
    statistics of the global batch (global_stats.global_batch_norm)."""
    group = process_group() if bn.training else None
    return bn(x) if group is None else global_batch_norm(bn, x, group)


def _kth_largest_count(m: int, sparsity: float) -> int:
    """How many values are >= the quantile threshold: the threshold is the
    `max(1, int(m * s))`-th smallest of m values, i.e. the r-th largest, r = m - k + 1.
    (Same float arithmetic as the reference, so the same k at every boundary.)"""
    k = max(1, int(m * sparsity))
    return m - k + 1


@torch.no_grad()
def _rth_largest_per_row(values: torch.Tensor, r: int) -> torch.Tensor:
    """values: (N, C, L) -> (C,) the r-th largest of each channel's N * L values.

    Where few values survive, no full selection is needed: every (sample, channel) row's
    top-j (j = ceil(r / N)) gives N * j >= r real values, so their r-th largest is a lower
    bound on the channel's r-th largest. Only values above that bound (a few times r) are
    candidates. Rows are contiguous in (N, C, H, W) memory, so nothing large is copied.
    Where many survive (density 0.5), a k-th value over the channel is cheaper."""
    n, c, length = values.shape
    m = n * length
    if r == 1:
        return values.amax(dim=(0, 2))
    if r > m // 8:
        return values.transpose(0, 1).reshape(c, m).kthvalue(m - r + 1, dim=1).values
    j = min(length, -(-r // n))
    top = values.topk(j, dim=2, sorted=False).values  # (N, C, j)
    top = top.transpose(0, 1).reshape(c, n * j)  # (C, N * j): small
    bound = top.topk(r, dim=1, sorted=False).values.amin(dim=1)  # (C,) <= the answer
    if j >= r:  # each row's top-r holds every value of the channel's top-r: exact already
        return bound
    where = (values >= bound.view(1, c, 1)).nonzero()  # (K, 3): >= r candidates a channel
    candidates, channel = values[where[:, 0], where[:, 1], where[:, 2]], where[:, 1]
    return torch.stack([candidates[channel == k].topk(r, sorted=False).values.amin()
                        for k in range(c)])


class SparsityLayer(nn.Module):
    """Base class: holds the target sparsity as a float64 buffer (saved in state_dict)."""

    sparsity: torch.Tensor

    def __init__(self, channels: int, sparsity: float = 0.5):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels = channels
        self.register_buffer("sparsity", torch.tensor(float(sparsity), dtype=torch.float64))
        self.set_sparsity(sparsity)

    @property
    def density(self) -> float:
        return 1.0 - float(self.sparsity)

    def set_sparsity(self, sparsity: float) -> None:
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        self.sparsity.fill_(float(sparsity))

    def set_density(self, density: float) -> None:
        self.set_sparsity(1.0 - density)

    def penalty(self, y: torch.Tensor) -> torch.Tensor:
        return y.new_zeros(())

    def active(self, y: torch.Tensor) -> torch.Tensor:
        return y > 0

    def extra_repr(self) -> str:
        return f"channels={self.channels}, density={self.density:.4g}"


class SpatialSparsity(SparsityLayer):
    """Sparling's spatial sparsity layer: BatchNorm, then `relu(x - t)` with thresholds
    re-estimated from the batch quantile while training.

    per_channel=True is MT (one threshold per channel); False is ST (one for everything).
    accumulate_survivors=K pools batches until about K survivors per channel are expected
    (`K / density` values) before each threshold update: the paper's accumulated estimator,
    which steadies the quantile of ~5 survivors per batch at extreme sparsity.
    """

    thresholds: torch.Tensor

    def __init__(
        self,
        channels: int,
        sparsity: float = 0.5,
        *,
        per_channel: bool = True,
        batch_norm: bool = True,
        momentum: float = 0.1,
        accumulate_survivors: float | None = None,
    ):
        super().__init__(channels, sparsity)
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        if accumulate_survivors is not None and accumulate_survivors <= 0:
            raise ValueError("accumulate_survivors must be positive (or None to disable)")
        self.per_channel = per_channel
        self.momentum = momentum
        self.accumulate_survivors = accumulate_survivors
        # affine=True: SPEC 1.1 (without BatchNorm training fails: ~72% end-to-end error)
        self.batch_norm = nn.BatchNorm2d(channels, affine=True) if batch_norm else None
        self.register_buffer("thresholds", torch.zeros(channels if per_channel else 1))
        self._pool: list[torch.Tensor] = []  # accumulated (1, C', N * L) values, not state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = _as_4d(x)  # (N, C, H, W)
        if x.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {x.shape[1]}")
        if self.batch_norm is not None:
            x = _normalise(self.batch_norm, x)
        if self.training:
            self._update_thresholds(x)
        t = self.thresholds.to(x.dtype)
        t = t.view(1, -1, 1, 1) if self.per_channel else t.view(1, 1, 1, 1)
        return F.relu(x - t).reshape(shape)

    @torch.no_grad()
    def _update_thresholds(self, x: torch.Tensor) -> None:
        n, c, h, w = x.shape
        values = x.detach().float()
        # (N, C, H*W) for MT; (N, 1, C*H*W) for ST: views of the contiguous input
        values = values.reshape(n, c, h * w) if self.per_channel else values.reshape(n, 1, -1)
        # Under torch.distributed every rank holds part of the global batch: counts are
        # summed and the r-th largest is taken over all ranks (global_stats), so all hold
        # the thresholds one process would compute from the whole batch.
        group = process_group()
        if self.accumulate_survivors is not None:
            self._pool.append(values.transpose(0, 1).reshape(1, values.shape[1], -1).clone())
            pooled = sum(v.shape[2] for v in self._pool)
            if group is not None:
                pooled = global_sum(pooled, group, values.device)
            if pooled * self.density < self.accumulate_survivors:
                return
            values = torch.cat(self._pool, dim=2)  # (1, C, pooled values)
            self._pool = []
        m = values.shape[0] * values.shape[2]
        if group is not None:
            m = global_sum(m, group, values.device)
        r = _kth_largest_count(m, float(self.sparsity))
        quantile = (_rth_largest_per_row(values, r) if group is None
                    else global_rth_largest(values, r, group))
        self.thresholds.mul_(1 - self.momentum).add_(quantile * self.momentum)

    def train(self, mode: bool = True) -> SpatialSparsity:
        if not mode:
            self._pool = []
        return super().train(mode)

    def extra_repr(self) -> str:
        kind = "MT" if self.per_channel else "ST"
        acc = f", accumulate_survivors={self.accumulate_survivors}" * bool(
            self.accumulate_survivors
        )
        return f"{kind}, {super().extra_repr()}, momentum={self.momentum}{acc}"


class L1Sparsity(SparsityLayer):
    """Baseline: ReLU bottleneck; `penalty` is `weight * mean |y|` (SPEC 1.4)."""

    def __init__(self, channels: int, sparsity: float = 0.5, *, weight: float = 1.0,
                 batch_norm: bool = True):
        super().__init__(channels, sparsity)
        self.weight = weight
        self.batch_norm = nn.BatchNorm2d(channels) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = _as_4d(x)
        if self.batch_norm is not None:
            x = _normalise(self.batch_norm, x)
        return F.relu(x).reshape(shape)

    def penalty(self, y: torch.Tensor) -> torch.Tensor:
        return self.weight * y.abs().mean()


class KLSparsity(SparsityLayer):
    """Baseline: sigmoid bottleneck; `penalty` is `weight * KL(p || mean activation)` per
    channel, averaged; activations > 0.5 count as active (SPEC 1.4)."""

    def __init__(self, channels: int, sparsity: float = 0.5, *, weight: float = 1.0,
                 target: float = 5.02e-5, batch_norm: bool = True):
        super().__init__(channels, sparsity)
        if not 0 < target < 1:
            raise ValueError("target must be in (0, 1)")
        self.weight, self.target = weight, target
        self.batch_norm = nn.BatchNorm2d(channels) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = _as_4d(x)
        if self.batch_norm is not None:
            x = _normalise(self.batch_norm, x)
        return torch.sigmoid(x).reshape(shape)

    def penalty(self, y: torch.Tensor) -> torch.Tensor:
        y = _as_4d(y)
        rho = y.float().mean(dim=(0, 2, 3)).clamp(1e-7, 1 - 1e-7)  # (C,)
        p = self.target
        kl = p * torch.log(p / rho) + (1 - p) * torch.log((1 - p) / (1 - rho))
        return self.weight * kl.mean()

    def active(self, y: torch.Tensor) -> torch.Tensor:
        return y > 0.5


class TopKSparsity(SparsityLayer):
    """Baseline: per sample, keep the `ceil(density * C * H * W)` largest values (after
    BatchNorm and ReLU) and zero the rest, in training and evaluation alike."""

    def __init__(self, channels: int, sparsity: float = 0.5, *, batch_norm: bool = True):
        super().__init__(channels, sparsity)
        self.batch_norm = nn.BatchNorm2d(channels) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = _as_4d(x)
        if self.batch_norm is not None:
            x = _normalise(self.batch_norm, x)
        x = F.relu(x)
        flat = x.reshape(x.shape[0], -1)  # (N, C*H*W)
        k = max(1, min(flat.shape[1], int(torch.ceil(torch.tensor(self.density * flat.shape[1])))))
        with torch.no_grad():
            kth = flat.topk(k, dim=1, sorted=False).values.amin(dim=1, keepdim=True)
        return (flat * (flat >= kth)).reshape(shape)


class NoSparsity(SparsityLayer):
    """Identity bottleneck (for debugging decoders)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


SPARSITY_KINDS = ("mt", "st", "l1", "kl", "topk", "none")


def make_sparsity_layer(
    kind: str,
    channels: int,
    sparsity: float = 0.5,
    *,
    batch_norm: bool = True,
    penalty_weight: float = 1.0,
    accumulate_survivors: float | None = None,
    momentum: float = 0.1,
) -> SparsityLayer:
    """Build a bottleneck by name: mt, st, l1, kl, topk or none."""
    if kind == "mt" or kind == "st":
        return SpatialSparsity(
            channels, sparsity, per_channel=kind == "mt", batch_norm=batch_norm,
            momentum=momentum, accumulate_survivors=accumulate_survivors,
        )
    if kind == "l1":
        return L1Sparsity(channels, sparsity, weight=penalty_weight, batch_norm=batch_norm)
    if kind == "kl":
        return KLSparsity(channels, sparsity, weight=penalty_weight, batch_norm=batch_norm)
    if kind == "topk":
        return TopKSparsity(channels, sparsity, batch_norm=batch_norm)
    if kind == "none":
        return NoSparsity(channels, sparsity)
    raise ValueError(f"unknown sparsity kind {kind!r}; choose one of {', '.join(SPARSITY_KINDS)}")
