"""How a trained LaTeX-OCR model's misses depend on the density it is cut at.

    python experiments/latex_density_sweep.py CHECKPOINT [--densities 8.94e-6,1.2e-5]
        [--calibrate 200] [--n 300] [--json OUT]

For each density d, every channel's threshold is re-estimated as the MT layer does in
training (the per-channel quantile that keeps a fraction d of its BatchNorm-ed values),
but once, on `--calibrate` validation images in eval mode; then the model is evaluated on
the first `--n` test images (`sparling_core.analysis.evaluate`). Nothing is retrained: the
decoder was trained at the checkpoint's density, so E2EE at another density is a lower
bound on what training there would give, while FPE / FNE / CE measure the motif map alone.
The question it answers: is a LaTeX-OCR model's FNE set by the density target (small
glyphs are the weakest activations of their channel and fall under its quantile) or by
what the motif model learned?
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sparling_core.analysis.evaluate import evaluate
from sparling_core.checkpoint import load_checkpoint
from sparling_core.domains import get_domain
from sparling_core.layers.sparsity import _kth_largest_count, _rth_largest_per_row


@torch.no_grad()
def recalibrate(model, images: torch.Tensor, density: float, batch_size: int = 50) -> None:
    """Set the MT thresholds to each channel's (1 - density) quantile on `images`."""
    model.eval()
    bn = model.bottleneck.batch_norm
    values = torch.cat([bn(model.motif_model(images[i:i + batch_size])).float()
                        for i in range(0, len(images), batch_size)])
    n, c, h, w = values.shape
    values = values.reshape(n, c, h * w)
    r = _kth_largest_count(n * h * w, 1 - density)
    model.bottleneck.thresholds.copy_(_rth_largest_per_row(values, r))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--densities", default="8.94e-6,1.1e-5,1.3e-5")
    p.add_argument("--calibrate", type=int, default=200)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    model = load_checkpoint(args.checkpoint).model
    domain = get_domain(model.config.domain)
    first = domain.first_seed("val")
    images, _ = domain.batch(domain.samples(range(first, first + args.calibrate), "val"))
    rows = []
    base = evaluate(model, n=args.n, domain=domain)
    rows.append({"density_target": "as trained", **{k: base[k] for k in (
        "e2ee", "fpe", "fne", "ce", "density", "density_ratio")}})
    print(json.dumps(rows[-1]), flush=True)
    for d in (float(x) for x in args.densities.split(",")):
        recalibrate(model, images, d)
        rep = evaluate(model, n=args.n, domain=domain)
        rows.append({"density_target": d, **{k: rep[k] for k in (
            "e2ee", "fpe", "fne", "ce", "density", "density_ratio")}})
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
