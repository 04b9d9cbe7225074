"""What kind of mistakes does a checkpoint's decoder make? On the first N test images,
every wrong answer is one of:

- `order`: the right symbols in another order (for DigitCircle: the digits are all found
  but two near-tied angles come out swapped);
- `missing` / `extra`: shorter / longer than the label;
- `other`: the same length, different symbols.

    python experiments/decoder_errors.py checkpoints/digit-circle-mt [--n 1000]

Counts are split by label length. A model whose motif metrics are clean (FPE, FNE, CE near
0) but whose E2EE is not has a decoder problem, and this says which one.

`--rule` (DigitCircle, channel decoder) also scores a fixed reader of the same maps: the
firing channels in the decoder's own angular order, each named by its majority digit (the
checkpoint's metrics.json confusion), rotated so that the smallest comes first. It prints
how often the rule and the learned decoder are right (together and apart) and the kinds
of the rule's mistakes. A rule that fails where the decoder fails points at the map.
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


def rule_readout(decoder, motifs: torch.Tensor, digit_of: list[int]) -> list[list[int]]:
    """The fixed reader of `--rule`: firing channels in the channel decoder's angular order,
    each named by digit_of[channel], rotated so that the smallest digit comes first."""
    _, order, present = decoder.summarise(motifs)
    out = []
    for i in range(len(motifs)):
        seq = [digit_of[c] for c in order[i].tolist() if present[i, c]]
        if seq:
            start = seq.index(min(seq))
            seq = seq[start:] + seq[:start]
        out.append(seq)
    return out


def majority_digits(checkpoint: Path) -> list[int]:
    """Each channel's majority digit from the checkpoint's evaluation (confusion[digit][c])."""
    metrics = checkpoint / "metrics.json"
    if not metrics.is_file() or "confusion" not in json.loads(metrics.read_text()):
        raise SystemExit(f"--rule needs {metrics} with a confusion matrix "
                         "(sparling evaluate CKPT --update-metrics)")
    confusion = json.loads(metrics.read_text())["confusion"]
    return [max(range(len(confusion)), key=lambda d: confusion[d][c])
            for c in range(len(confusion[0]))]


def decoder_errors(checkpoint: Path, n: int, batch_size: int = 50, rule: bool = False) -> dict:
    model = load_checkpoint(checkpoint).model.eval()
    if rule and model.config.decoder != "channels":
        raise SystemExit("--rule reads the channel decoder's order; this checkpoint has the "
                         f"{model.config.decoder!r} decoder")
    digit_of = majority_digits(checkpoint) if rule else []
    domain = get_domain(model.config.domain)
    first = domain.first_seed("test")
    by_length: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    both, rule_kinds = collections.Counter(), collections.Counter()
    with torch.no_grad():
        for start in range(first, first + n, batch_size):
            seeds = range(start, min(start + batch_size, first + n))
            images, labels = domain.batch(domain.samples(seeds, "test"))
            motifs = model.sparse_motifs(images)
            decoded = model.decode_motifs(motifs)[0]
            ruled = rule_readout(model.decoder, motifs, digit_of) if rule else decoded
            for predicted, by_rule, true in zip(decoded, ruled, labels, strict=True):
                by_length[len(true)][classify(predicted, true) or "right"] += 1
                if rule:
                    kind = classify(by_rule, true)
                    both[f"rule {'wrong' if kind else 'right'}, decoder "
                         f"{'wrong' if classify(predicted, true) else 'right'}"] += 1
                    rule_kinds[kind or "right"] += 1
    total = collections.Counter()
    for counts in by_length.values():
        total.update(counts)
    report = {"checkpoint": str(checkpoint), "n": n,
              "wrong": n - total["right"], **{k: total[k] for k in KINDS},
              "by_length": {length: dict(c) for length, c in sorted(by_length.items())}}
    if rule:
        report["rule"] = {"right": rule_kinds["right"], **{k: rule_kinds[k] for k in KINDS},
                          "with_decoder": dict(sorted(both.items()))}
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--n", type=int, default=1000, help="test images (default 1,000)")
    p.add_argument("--json", type=Path, default=None, help="also write the counts here")
    p.add_argument("--rule", action="store_true",
                   help="also score the fixed angular-order reader (channel decoder)")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be >= 1")
    if not args.checkpoint.is_dir():
        p.error(f"{args.checkpoint} is not a checkpoint folder")
    report = decoder_errors(args.checkpoint, args.n, rule=args.rule)
    print(f"{args.checkpoint}: {report['wrong']} of {args.n} answers wrong: "
          + ", ".join(f"{k} {report[k]}" for k in KINDS))
    for length, counts in report["by_length"].items():
        print(f"  length {length}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if args.rule:
        r = report["rule"]
        print(f"rule: {r['right']} of {args.n} right; wrong: "
              + ", ".join(f"{k} {r[k]}" for k in KINDS))
        print("  " + ", ".join(f"{k}: {v}" for k, v in r["with_decoder"].items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
