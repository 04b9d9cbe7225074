"""Batch statistics over every process of a torch.distributed job (SPEC 1.1 across ranks).

With W processes each holding a slice of the global batch, the sparsity layer must act as
one process holding the whole batch would: the same BatchNorm mean and variance, and the
same k-th largest value per channel, on every rank after every step. Nothing here runs
unless torch.distributed is initialised with more than one process (`process_group()` is
None otherwise and the layers take their single-process path unchanged).

- `global_rth_largest`: the exact r-th largest value of each channel over all ranks.
  Few survivors (r <= GATHER_MAX_R, extreme sparsity): every rank's local top-r values
  per channel hold every value of the global top-r, so an all-gather of r values per
  channel and rank and a top-r of their union give it exactly. Many survivors (density 0.5:
  r is half the batch): a radix select on the float bits, 8 bits a round, with each round's
  256-bucket histogram per channel all-reduced: 4 rounds of C x 256 counts find the exact
  value without moving the tensor.
- `global_batch_norm`: BatchNorm2d in training mode with mean and variance over all ranks
  (two all-reduces of C sums forward, one of 2C sums backward), running statistics updated
  as one process would. torch's SyncBatchNorm does the same but refuses CPU tensors
  ("SyncBatchNorm expected input tensor to be on GPU", torch 2.13), and gloo / CPU is what
  this project trains on; this one runs on CPU (gloo) and CUDA (NCCL) alike.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "GATHER_MAX_R",
    "process_group",
    "global_sum",
    "local_top_values",
    "gather_rth_largest",
    "radix_rth_largest",
    "global_rth_largest",
    "global_batch_norm",
]

# r (survivors per channel and batch) up to which the all-gather of local top-r values is
# used; above it, the radix select. The gather moves W * C * r floats, the radix select
# 4 * C * 256 counts plus 4 passes over the local values.
GATHER_MAX_R = 2048


def process_group() -> dist.ProcessGroup | None:
    """The default group when torch.distributed runs with more than one process, else None."""
    if not dist.is_available() or not dist.is_initialized():
        return None
    if dist.get_world_size() < 2:
        return None
    return dist.group.WORLD


def global_sum(value: int, group: dist.ProcessGroup, device: torch.device) -> int:
    """An integer summed over the ranks of `group`."""
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.all_reduce(t, group=group)
    return int(t.item())


@torch.no_grad()
def local_top_values(values: torch.Tensor, r: int) -> torch.Tensor:
    """values (N, C, L) -> (C, r): each channel's r largest values here (any order), padded
    with -inf where this rank holds fewer than r. Only values at or above the local r-th
    largest are candidates (found as in `_rth_largest_per_row`), so nothing large is sorted."""
    from .sparsity import _rth_largest_per_row  # the single-process selection

    n, c, length = values.shape
    m = n * length
    if m <= r:
        flat = values.transpose(0, 1).reshape(c, m)
        return torch.nn.functional.pad(flat, (0, r - m), value=float("-inf"))
    bound = _rth_largest_per_row(values, r)  # (C,) the local r-th largest
    where = (values >= bound.view(1, c, 1)).nonzero()  # >= r candidates a channel (ties: more)
    candidates, channel = values[where[:, 0], where[:, 1], where[:, 2]], where[:, 1]
    return torch.stack([candidates[channel == k].topk(r, sorted=False).values
                        for k in range(c)])


@torch.no_grad()
def gather_rth_largest(values: torch.Tensor, r: int, group: dist.ProcessGroup) -> torch.Tensor:
    """(C,) the r-th largest of each channel over all ranks, from every rank's top-r."""
    top = local_top_values(values, r).contiguous()  # (C, r)
    parts = [torch.empty_like(top) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, top, group=group)
    union = torch.cat(parts, dim=1)  # (C, W * r): holds the global top-r of each channel
    return union.topk(r, dim=1, sorted=False).values.amin(dim=1)


def _ordered_keys(values: torch.Tensor) -> torch.Tensor:
    """float32 -> int64 keys in [0, 2**32) in the same order as the floats (-0.0 as +0.0)."""
    bits = (values.float() + 0.0).view(torch.int32).to(torch.int64)
    return torch.where(bits >= 0, bits + 2**31, -1 - bits)


def _keys_to_float(keys: torch.Tensor) -> torch.Tensor:
    bits = torch.where(keys >= 2**31, keys - 2**31, -1 - keys)
    return bits.to(torch.int32).view(torch.float32)


@torch.no_grad()
def radix_rth_largest(values: torch.Tensor, r: int, group: dist.ProcessGroup | None
                      ) -> torch.Tensor:
    """(C,) the r-th largest of each channel over all ranks: a most-significant-digit radix
    select on the float's ordered bits. Each round counts, per channel, the values whose
    higher digits match the prefix found so far, by their next 8 bits (a C x 256 histogram,
    summed over ranks); the bucket holding the r-th largest extends the prefix and r
    becomes its rank inside the bucket. After 4 rounds the prefix is the value's bits.
    `group=None` counts this process's values only (the single-process equivalent)."""
    n, c, length = values.shape
    device = values.device
    keys = _ordered_keys(values).reshape(-1)
    channel = torch.arange(c, device=device).view(1, c, 1).expand(n, c, length).reshape(-1)
    prefix = torch.zeros(c, dtype=torch.int64, device=device)
    rank = torch.full((c,), r, dtype=torch.int64, device=device)  # rank from the top, >= 1
    for shift in (24, 16, 8, 0):
        digit = (keys >> shift) & 255
        hist = torch.bincount(channel * 256 + digit, minlength=c * 256).view(c, 256)
        if group is not None:
            dist.all_reduce(hist, group=group)
        at_least = hist.flip(1).cumsum(1)  # at_least[:, j]: values with digit >= 255 - j
        j = (at_least < rank[:, None]).sum(1)  # first j with at_least >= rank
        above = torch.where(j > 0, at_least.gather(1, (j - 1).clamp_min(0)[:, None])[:, 0], 0)
        chosen = 255 - j
        rank = rank - above
        prefix = prefix * 256 + chosen
        keep = digit == chosen[channel]
        keys, channel = keys[keep], channel[keep]
    return _keys_to_float(prefix)


@torch.no_grad()
def global_rth_largest(values: torch.Tensor, r: int, group: dist.ProcessGroup,
                       method: str | None = None) -> torch.Tensor:
    """values (N, C, L), this rank's share -> (C,) the r-th largest of each channel over all
    ranks, identical on every rank. method: "gather" | "radix" | None (by r)."""
    if method is None:
        method = "gather" if r <= GATHER_MAX_R else "radix"
    if method == "gather":
        return gather_rth_largest(values, r, group)
    if method == "radix":
        return radix_rth_largest(values, r, group)
    raise ValueError(f"method must be 'gather' or 'radix', got {method!r}")


class _GlobalBatchNorm(torch.autograd.Function):
    """BatchNorm2d (training mode) with statistics over all ranks; the backward is the
    exact gradient of the sum of every rank's loss (as torch's SyncBatchNorm's)."""

    @staticmethod
    def forward(ctx, x, weight, bias, bn: nn.BatchNorm2d, group):  # type: ignore[override]
        c = x.shape[1]
        dims = (0, 2, 3)
        head = torch.cat([x.sum(dims, dtype=torch.float64),
                          torch.tensor([x.numel() // c], dtype=torch.float64, device=x.device)])
        dist.all_reduce(head, group=group)
        n = float(head[c].item())
        mean = head[:c] / n  # float64
        centred = x - mean.to(x.dtype).view(1, c, 1, 1)
        square = (centred * centred).sum(dims, dtype=torch.float64)
        dist.all_reduce(square, group=group)
        var = square / n  # biased: what normalises
        invstd = (var + bn.eps).rsqrt().to(x.dtype)
        xhat = centred * invstd.view(1, c, 1, 1)
        y = xhat
        if weight is not None:
            y = y * weight.view(1, c, 1, 1) + bias.view(1, c, 1, 1)
        if bn.track_running_stats and bn.running_mean is not None:
            bn.num_batches_tracked.add_(1)
            factor = (1.0 / float(bn.num_batches_tracked) if bn.momentum is None
                      else bn.momentum)
            unbiased = var * (n / max(n - 1.0, 1.0))
            bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype) * factor)
            bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype) * factor)
        ctx.save_for_backward(xhat, weight, invstd)
        ctx.group, ctx.n = group, n
        return y

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        xhat, weight, invstd = ctx.saved_tensors
        c = dy.shape[1]
        dims = (0, 2, 3)
        local = torch.cat([dy.sum(dims, dtype=torch.float64),
                           (dy * xhat).sum(dims, dtype=torch.float64)])
        grad_bias, grad_weight = local[:c].to(dy.dtype), local[c:].to(dy.dtype)  # this rank's
        total = local.clone()
        dist.all_reduce(total, group=ctx.group)  # every rank's loss through the statistics
        mean_dy = (total[:c] / ctx.n).to(dy.dtype).view(1, c, 1, 1)
        mean_dy_xhat = (total[c:] / ctx.n).to(dy.dtype).view(1, c, 1, 1)
        scale = invstd if weight is None else invstd * weight
        dx = (dy - mean_dy - xhat * mean_dy_xhat) * scale.view(1, c, 1, 1)
        if weight is None:
            return dx, None, None, None, None
        return dx, grad_weight, grad_bias, None, None


def global_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, group: dist.ProcessGroup
                      ) -> torch.Tensor:
    """`bn(x)` in training mode with the mean and variance of the global batch (all ranks'
    x together), updating bn's running statistics as one process holding it would."""
    if x.dim() != 4 or x.shape[1] != bn.num_features:
        raise ValueError(f"expected (N, {bn.num_features}, H, W), got {tuple(x.shape)}")
    return _GlobalBatchNorm.apply(x, bn.weight, bn.bias, bn, group)
