"""Where does each channel fire? For every active (channel, pixel) of a checkpoint on test
images: the nearest ground-truth digit, how far from its centre, whether it is inside that
digit's box (the box FPE and FNE score against), and if not, by how much it is outside.

    python experiments/channel_sites.py checkpoints/digit-circle-mt [--n 300]

A channel whose activations sit at one digit but never win that digit's box (see the
confusion table of `sparling evaluate`) is a redundant detector; one that sits a few
pixels off the centre misses boxes and makes false positives. "outside by (rows, cols)"
counts how far beyond the box's edge an activation lies (0: within the box's rows or
columns; negative: above or left of it): a channel that marks its digit at a steady offset
just outside the box (seed 4 of the release recipe marks every 1 at (0, +1)) reads the
digit for the decoder and still counts as a miss and a false positive each time.
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


def outside_by(r: int, c: int, box: tuple[int, int, int, int]) -> tuple[int, int]:
    """How far (rows, cols) pixel (r, c) lies beyond the end-exclusive box [r0, c0, r1, c1]:
    0 within its rows (columns), negative above (left of) it, positive below (right)."""
    r0, c0, r1, c1 = box
    return (r - r0 if r < r0 else r - (r1 - 1) if r >= r1 else 0,
            c - c0 if c < c0 else c - (c1 - 1) if c >= c1 else 0)


def channel_sites(model, samples: list[dc.DigitCircleSample]) -> list[dict]:
    """Per channel: activations, nearest-digit counts, median L1 distance to that centre,
    how many lie inside the nearest digit's box, and how far outside it the others lie
    ((rows, cols) counts, `outside_by`)."""
    images = dc.images_to_tensor(np.stack([s.image for s in samples]))
    with torch.no_grad():
        active = model.bottleneck.active(model.sparse_motifs(images))
    rows = []
    for ch in range(active.shape[1]):
        near, dists, outside = collections.Counter(), [], collections.Counter()
        for i, s in enumerate(samples):
            for r, c in active[i, ch].nonzero().tolist():
                dist, _, motif = min((abs(r - m.center[0]) + abs(c - m.center[1]), k, m)
                                     for k, m in enumerate(s.motifs))
                near[motif.digit] += 1
                dists.append(dist)
                outside[outside_by(r, c, tuple(motif.box))] += 1
        in_box = outside.pop((0, 0), 0)
        rows.append({"channel": ch, "active": len(dists), "nearest": near.most_common(),
                     "median_distance": float(np.median(dists)) if dists else None,
                     "in_box": in_box, "outside": outside.most_common()})
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
        line = (f"channel {row['channel']}: {row['active']} active, nearest digit {{{top}}}, "
                f"median distance {row['median_distance']} px")
        if row["active"]:
            off = ", ".join(f"({dr:+d}, {dc_:+d}) x {k}" for (dr, dc_), k in row["outside"][:3])
            line += (f", in its box {row['in_box']} ({100 * row['in_box'] / row['active']:.0f}%)"
                     + (f", outside by {off}" if off else ""))
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
