"""Which LaTeX-OCR symbols a model misses, split by glyph size.

    python experiments/latex_misses.py CHECKPOINT [--eval EVAL.json] [--n 300]

Aligns the first N test images (`sparling_core.api.align`, the evaluation's rule: a symbol
is hit when a channel assigned to it fires inside its padded box, confused when only other
channels do, missed when none does) and counts hits, confusions and misses per symbol.
Characters (digits and letters) are split by their box's height: the glyph's ink plus the
2 px padding on each side, so a full-size digit (19 px of ink) has a 22-23 px box, a
first-level sub- or superscript (0.7 x) 17-18 px, and a second-level one (a script inside a
script or a deep fraction) 10-14 px. The channel -> symbol assignment is the evaluation's
(`--eval`, the JSON of `sparling evaluate --json`), else the checkpoint's metrics, else the
best fit per image.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

from sparling_core import api
from sparling_core.checkpoint import load_checkpoint
from sparling_core.domains import get_domain

CHARACTERS = set("0123456789xyzabc")


def size_class(height: int) -> str:
    """A character's box height (padded) -> full | script | script2."""
    if height >= 20:
        return "full"
    return "script" if height >= 16 else "script2"


def misses(checkpoint: Path, n: int, evaluation: Path | None = None) -> dict:
    """{(symbol or 'characters, SIZE'): {'hit': k, 'confused': k, 'missed': k}}"""
    model = load_checkpoint(checkpoint).model
    domain = get_domain("latex-ocr")
    assignment = None
    if evaluation is not None:
        assignment = {int(c): int(s) for c, s in
                      json.loads(evaluation.read_text())["assignment"].items()}
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    first = domain.first_seed("test")
    for i in range(n):
        aligned = api.align(model, domain.sample(first + i, "test"), assignment=assignment)
        for m in aligned.motifs:
            key = (f"characters, {size_class(m.box[2] - m.box[0])}"
                   if m.symbol in CHARACTERS else m.symbol)
            counts[key][m.status] += 1
    return {k: dict(v) for k, v in sorted(counts.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--eval", type=Path, help="its evaluation JSON (the assignment)")
    parser.add_argument("--n", type=int, default=300, help="test images")
    args = parser.parse_args()
    if args.n < 1:
        parser.error("--n must be >= 1")
    print("| symbol | motifs | hit | confused | missed | missed % |\n|---|---|---|---|---|---|")
    for key, c in misses(args.checkpoint, args.n, args.eval).items():
        total = sum(c.values())
        print(f"| {key} | {total} | {c.get('hit', 0)} | {c.get('confused', 0)} | "
              f"{c.get('missed', 0)} | {100 * c.get('missed', 0) / total:.1f} |")


if __name__ == "__main__":
    main()
