"""Can a fresh channel learn digit D from the presence loss over a checkpoint's frozen trunk?

    python experiments/fresh_channel_probe.py CKPT DIGIT max,mean,lse,max+mean

A resampled channel is one 1x1 row of the motif head over the trunk's features. This trains
such a row (default init, 600 Adam steps of 32 images at lr 2e-3, presence weight 5 as the
recipe) on 1,000 train images' frozen features, pooled over the image by max (the recipe's
presence head), mean, log-sum-exp or max + mean, and reports on 300 val images: the AUC of
its max for the digit's presence, and how often its argmax lies in a box of that digit.
"""
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sparling_core.checkpoint import load_checkpoint  # noqa: E402
from sparling_core.domains import get_domain  # noqa: E402

POOLS = {
    "max": lambda f: f.amax(1),
    "mean": lambda f: f.mean(1),
    "lse": lambda f: torch.logsumexp(f, 1) - math.log(f.shape[1]),
    "max+mean": lambda f: f.amax(1) + f.mean(1),
}


def features(mm, dom, seeds, split: str, digit: int):
    """Frozen trunk features (N, width, H, W), the digit's presence and its boxes."""
    samples = dom.samples(seeds, split)
    images, _ = dom.batch(samples)
    with torch.no_grad():
        x = torch.cat([F.relu(mm(images[i:i + 50])).half() for i in range(0, len(images), 50)])
    has = torch.tensor([float(str(digit) in [str(t) for t in s.label]) for s in samples])
    boxes = [[m.box for m in s.motifs if str(m.symbol) == str(digit)] for s in samples]
    return x, has, boxes


def auc(score: torch.Tensor, y: torch.Tensor) -> float:
    ranks = torch.empty(len(score))
    ranks[score.argsort()] = torch.arange(len(score), dtype=torch.float)
    pos = y > 0.5
    n1, n0 = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n1 * (n1 - 1) / 2) / (n1 * n0))


def localised(resp: torch.Tensor, boxes) -> float:
    hits = n = 0
    for i in range(len(resp)):
        if boxes[i]:
            n += 1
            r, c = divmod(int(resp[i].argmax()), resp.shape[-1])
            hits += any(b[0] - 2 <= r < b[2] + 2 and b[1] - 2 <= c < b[3] + 2 for b in boxes[i])
    return hits / max(n, 1)


def main() -> None:
    torch.set_num_threads(1)
    ckpt_path, digit, pools = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    mm = load_checkpoint(ckpt_path).model.motif_model
    width = mm.head.in_channels
    probe = torch.nn.Conv2d(width, 4 * width, 1)  # output channel k = trunk feature k
    with torch.no_grad():
        probe.weight.zero_()
        probe.bias.zero_()
        for k in range(width):
            probe.weight[4 * k, k] = 1.0
    mm.head = probe
    dom = get_domain("digit-circle")
    t = time.time()
    (x, y, _), (xt, yt, bt) = (features(mm, dom, range(1000), "train", digit),
                               features(mm, dom, range(300), "val", digit))
    print(f"features {time.time() - t:.0f} s, train positives {y.mean():.2f}", flush=True)
    for pool in pools:
        torch.manual_seed(0)
        fresh = torch.nn.Conv2d(width, 4, 1)
        w = fresh.weight[0, :, 0, 0].detach().clone().requires_grad_(True)
        b = fresh.bias[:1].detach().clone().requires_grad_(True)
        a, c0 = torch.tensor(5.0, requires_grad=True), torch.tensor(0.0, requires_grad=True)
        opt = torch.optim.Adam([w, b, a, c0], lr=2e-3)
        for _ in range(600):
            idx = torch.randint(0, len(x), (32,))
            r = torch.einsum("nchw,c->nhw", x[idx].float(), w) + b
            loss = F.binary_cross_entropy_with_logits(a * POOLS[pool](r.flatten(1)) + c0, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            r = torch.einsum("nchw,c->nhw", xt.float(), w) + b
        print(f"{pool:9s}: max-pooled AUC {auc(r.flatten(1).amax(1), yt):.3f}, mean-pooled AUC "
              f"{auc(r.flatten(1).mean(1), yt):.3f}, argmax in a {digit} box "
              f"{localised(r, bt):.2f}", flush=True)


if __name__ == "__main__":
    main()
