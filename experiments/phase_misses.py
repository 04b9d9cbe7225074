"""Which digits does a checkpoint miss, and does it depend on where the digit sits?

For every ground-truth digit of the test images: does the channel assigned to that digit
(metrics.json's channel_to_digit, from `sparling evaluate`) fire inside the digit's box?
Hits are split by the parity of the box's top-left corner (row % 2, col % 2): a motif model
that works at half resolution (2x2 space-to-depth) can learn a digit in one pixel phase
and not the other.

    python experiments/phase_misses.py checkpoints/digit-circle-mt [--n 1000]
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

from sparling_core.analysis.inspect import parse_channel_to_digit  # noqa: E402
from sparling_core.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from sparling_core.domains import digit_circle as dc  # noqa: E402

PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))


def phase_hits(model, channel_of: dict[int, int], samples: list[dc.DigitCircleSample],
               batch_size: int = 100) -> dict[int, dict[tuple[int, int], list[int]]]:
    """digit -> box phase -> [hits, digits]: its channel fired inside its box."""
    table: dict = collections.defaultdict(lambda: {p: [0, 0] for p in PHASES})
    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        images = dc.images_to_tensor(np.stack([s.image for s in batch]))
        with torch.no_grad():
            active = model.bottleneck.active(model.sparse_motifs(images))
        for i, s in enumerate(batch):
            for m in s.motifs:
                r0, c0, r1, c1 = m.box
                cell = table[m.digit][(r0 % 2, c0 % 2)]
                channel = channel_of.get(m.digit)
                cell[0] += int(channel is not None and bool(active[i, channel, r0:r1, c0:c1].any()))
                cell[1] += 1
    return dict(table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--n", type=int, default=1000, help="test images (from the test seeds)")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be >= 1")
    try:
        ckpt = load_checkpoint(args.checkpoint)
    except CheckpointError as e:
        p.error(str(e))
    mapping = parse_channel_to_digit((ckpt.metrics or {}).get("channel_to_digit"),
                                     ckpt.config.motif_channels)
    if mapping is None:
        p.error(f"{args.checkpoint} has no channel_to_digit: run `sparling evaluate` first")
    channel_of = {d: c for c, d in mapping.items()}
    ckpt.model.eval()
    samples = [dc.sample(dc.TEST_SEEDS_START + i) for i in range(args.n)]
    table = phase_hits(ckpt.model, channel_of, samples)
    print(f"{args.checkpoint}: {args.n} test images; hits / digits by box phase (row%2, col%2)")
    for digit in sorted(table):
        cells = table[digit]
        hits, total = sum(c[0] for c in cells.values()), sum(c[1] for c in cells.values())
        phases = "  ".join(f"{p}: {cells[p][0]}/{cells[p][1]}" for p in PHASES)
        print(f"digit {digit} (channel {channel_of.get(digit, '-')}): missed "
              f"{100 * (1 - hits / max(total, 1)):.1f}%  {phases}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
