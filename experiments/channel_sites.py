"""Where does each channel fire? For every active (channel, pixel) of a checkpoint on test
images: the nearest ground-truth digit, and how far from its centre.

    python experiments/channel_sites.py checkpoints/digit-circle-mt [--n 300]

A channel whose activations sit at one digit but never win that digit's box (see the
confusion table of `sparling evaluate`) is a redundant detector; one that sits a few
pixels off the centre misses boxes and makes false positives.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sparling_core.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from sparling_core.domains import digit_circle as dc  # noqa: E402


def channel_sites(model, samples: list[dc.DigitCircleSample]) -> list[dict]:
    """Per channel: activations, nearest-digit counts, median L1 distance to that centre."""
    images = dc.images_to_tensor(np.stack([s.image for s in samples]))
    with torch.no_grad():
        active = model.bottleneck.active(model.sparse_motifs(images))
    rows = []
    for ch in range(active.shape[1]):
        near, dists = collections.Counter(), []
        for i, s in enumerate(samples):
            for r, c in active[i, ch].nonzero().tolist():
                dist, digit = min((abs(r - m.center[0]) + abs(c - m.center[1]), m.digit)
                                  for m in s.motifs)
                near[digit] += 1
                dists.append(dist)
        rows.append({"channel": ch, "active": len(dists), "nearest": near.most_common(),
                     "median_distance": float(np.median(dists)) if dists else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--n", type=int, default=300, help="test images (from the test seeds)")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be >= 1")
    try:
        model = load_checkpoint(args.checkpoint).model
    except CheckpointError as e:
        p.error(str(e))
    samples = [dc.sample(dc.TEST_SEEDS_START + i) for i in range(args.n)]
    print(f"{args.checkpoint}: {args.n} test images")
    for row in channel_sites(model, samples):
        top = ", ".join(f"{d}: {k}" for d, k in row["nearest"][:3])
        print(f"channel {row['channel']}: {row['active']} active, nearest digit {{{top}}}, "
              f"median distance {row['median_distance']} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
