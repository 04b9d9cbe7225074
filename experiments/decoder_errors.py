"""What kind of mistakes does a checkpoint's decoder make? On the first N test images,
every wrong answer is one of:

- `order`: the right symbols in another order (for DigitCircle: the digits are all found
  but two near-tied angles come out swapped);
- `missing` / `extra`: shorter / longer than the label;
- `other`: the same length, different symbols.

    python experiments/decoder_errors.py checkpoints/digit-circle-mt [--n 1000]

Counts are split by label length. A model whose motif metrics are clean (FPE, FNE, CE near
0) but whose E2EE is not has a decoder problem, and this says which one.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import torch

from sparling_core.checkpoint import load_checkpoint
from sparling_core.domains import get_domain

KINDS = ("order", "missing", "extra", "other")


def classify(predicted: list, true: list) -> str | None:
    """None when right, else one of KINDS."""
    if list(predicted) == list(true):
        return None
    if len(predicted) < len(true):
        return "missing"
    if len(predicted) > len(true):
        return "extra"
    return "order" if collections.Counter(predicted) == collections.Counter(true) else "other"


def decoder_errors(checkpoint: Path, n: int, batch_size: int = 50) -> dict:
    model = load_checkpoint(checkpoint).model.eval()
    domain = get_domain(model.config.domain)
    first = domain.first_seed("test")
    by_length: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    with torch.no_grad():
        for start in range(first, first + n, batch_size):
            seeds = range(start, min(start + batch_size, first + n))
            images, labels = domain.batch(domain.samples(seeds, "test"))
            for predicted, true in zip(model.generate(images).sequences, labels, strict=True):
                by_length[len(true)][classify(predicted, true) or "right"] += 1
    total = collections.Counter()
    for counts in by_length.values():
        total.update(counts)
    return {"checkpoint": str(checkpoint), "n": n,
            "wrong": n - total["right"], **{k: total[k] for k in KINDS},
            "by_length": {length: dict(c) for length, c in sorted(by_length.items())}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--n", type=int, default=1000, help="test images (default 1,000)")
    p.add_argument("--json", type=Path, default=None, help="also write the counts here")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be >= 1")
    if not args.checkpoint.is_dir():
        p.error(f"{args.checkpoint} is not a checkpoint folder")
    report = decoder_errors(args.checkpoint, args.n)
    print(f"{args.checkpoint}: {report['wrong']} of {args.n} answers wrong: "
          + ", ".join(f"{k} {report[k]}" for k in KINDS))
    for length, counts in report["by_length"].items():
        print(f"  length {length}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
