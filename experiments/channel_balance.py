"""Does a single threshold (ST) end up acting like per-channel ones (MT)?

    python experiments/channel_balance.py CHECKPOINT [CHECKPOINT ...] [--n 500] [--json OUT]

The paper's case against ST is that one threshold for all channels lets a few channels
take most of the activations (CE 22% against MT's 1%). This script measures, on the first
N test images in eval mode, how evenly a model's activations are spread over its channels
and how far its thresholds are from the ones MT would set:

- `share_min` / `share_max`: the smallest and largest channel's share of all activations,
  times the number of channels (1 and 1 when every channel fires equally often);
  `share_cv`: the coefficient of variation of the channels' counts;
- `mt_threshold_spread`: per channel, the threshold MT would set at the model's realised
  density (the channel's own quantile of its BatchNorm-ed values, fraction = density);
  the standard deviation of those across channels, in the units the threshold is applied
  in (BatchNorm-ed values, about unit-variance per channel). Near 0: the channels' upper
  tails are alike, so one threshold already is a per-channel threshold;
- `bn_beta_spread`, `bn_gamma_spread`: the standard deviation across channels of the
  BatchNorm affine shift and scale. relu(gamma x + beta - t) with a per-channel beta is a
  per-channel threshold t - beta learned by gradient, which ST keeps;
- `presence_weight`: the model's presence-loss weight (the loss that asks each channel to
  fire exactly when its token is in the label).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sparling_core.checkpoint import load_checkpoint
from sparling_core.domains import get_domain
from sparling_core.layers.sparsity import _kth_largest_count, _rth_largest_per_row


def balance(checkpoint: Path, n: int, batch_size: int = 100) -> dict:
    """`balance_of` the checkpoint's model, with the checkpoint's path."""
    return {"checkpoint": str(checkpoint),
            **balance_of(load_checkpoint(checkpoint).model, n, batch_size)}


@torch.no_grad()
def balance_of(model, n: int, batch_size: int = 100) -> dict:
    """The measures of the module docstring for a model (MT or ST, with BatchNorm) on the
    first `n` test images of its domain."""
    model.eval()
    domain = get_domain(model.config.domain)
    first = domain.first_seed("test")
    bn = model.bottleneck.batch_norm
    chunks = []
    for start in range(first, first + n, batch_size):
        images, _ = domain.batch(domain.samples(range(start, min(start + batch_size,
                                                                 first + n)), "test"))
        chunks.append(bn(model.motif_model(images)).float())
    values = torch.cat(chunks)  # (N, C, H, W), BatchNorm-ed (affine included)
    n_img, c, h, w = values.shape
    thresholds = model.bottleneck.thresholds
    t = thresholds.view(1, -1, 1, 1) if thresholds.numel() == c else thresholds.view(1, 1, 1, 1)
    counts = (values > t).sum(dim=(0, 2, 3)).double()
    density = float(counts.sum() / values.numel())
    share = counts / counts.mean()
    # the thresholds MT would set at this density (each channel's own quantile)
    r = _kth_largest_count(n_img * h * w, 1 - density)
    mt = _rth_largest_per_row(values.reshape(n_img, c, h * w), r)
    return {
        "sparsity": model.config.sparsity,
        "presence_weight": model.config.presence_weight, "n": n_img,
        "density": density, "share_min": float(share.min()), "share_max": float(share.max()),
        "share_cv": float(counts.std() / counts.mean()),
        "silent_channels": int((counts == 0).sum()),
        "mt_threshold_spread": float(mt.std()),
        "bn_beta_spread": float(bn.bias.std()), "bn_gamma_spread": float(bn.weight.std()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", type=Path, nargs="+")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    rows = []
    for ckpt in args.checkpoints:
        rows.append(balance(ckpt, args.n))
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
