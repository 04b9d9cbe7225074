"""The decoder's greedy loop three ways, on the maps of test images: the default
(`SparlingModel.decode_motifs`: the whole prefix re-run every step, one GEMM for the
batch), the batch-invariant one the service runs (`batch_invariant=True`: one product per
map, cached keys and values), and the service's old way (the default, in a fixed chunk of
`--chunk` maps padded with copies, so that batching could not change an answer).

    .venv/bin/python bench/decode.py                        # checkpoints/digit-circle-mt
    .venv/bin/python bench/decode.py --checkpoint PATH --images 64 --rounds 8

For 1 real map a call (a lone request) and for `--chunk` real maps (a busy server) the
variants alternate call by call over `--rounds` passes through the images, so that all see
the same machine; the figures are the mean milliseconds per call and the ratios against the
batch-invariant decode. The answers (tokens) are checked equal across the variants, and
the batch-invariant probabilities are checked equal, bit for bit, between the two batch
sizes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import backend  # noqa: E402,F401,I001 - the service's OpenMP spin setting, before torch works

from sparling_core.checkpoint import load_checkpoint  # noqa: E402
from sparling_core.domains import digit_circle as dc  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=REPO / "checkpoints" / "digit-circle-mt")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=8, help="maps per call for a busy server")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint).model.eval()
    samples = [dc.sample(dc.TEST_SEEDS_START + i) for i in range(args.images)]
    lengths = np.bincount([len(s.label) for s in samples])
    print(f"checkpoint {args.checkpoint.name}, {args.images} test images (label lengths: "
          + ", ".join(f"{n} x {k}" for k, n in enumerate(lengths) if n)
          + f"), chunk {args.chunk}, {args.threads} torch threads, max steps "
          f"{model.config.max_digits + 1}")

    def padded(part: torch.Tensor):
        part = torch.cat([part, part[-1:].expand(args.chunk - part.shape[0], *part.shape[1:])])
        return model.decode_motifs(part)

    variants = {
        "default": lambda part: model.decode_motifs(part),
        "batch-invariant": lambda part: model.decode_motifs(part, batch_invariant=True),
        f"default padded to {args.chunk}": padded,
    }
    probabilities: dict[int, list] = {}
    with torch.inference_mode():
        images, _ = dc.collate(samples)
        maps = model.sparse_motifs(images)
        for real in (1, args.chunk):
            times: dict[str, list[float]] = {name: [] for name in variants}
            probabilities[real] = []
            for round_ in range(args.rounds):
                for start in range(0, args.images, real):
                    part = maps[start:start + real]
                    answers = {}
                    for name, decode in variants.items():
                        if name.startswith("default padded") and real == args.chunk:
                            continue  # the same call as "default"
                        t = time.perf_counter()
                        answers[name] = decode(part)
                        times[name].append(time.perf_counter() - t)
                    sequences = {name: a[0][:part.shape[0]] for name, a in answers.items()}
                    if len({str(s) for s in sequences.values()}) != 1:
                        raise SystemExit(f"the variants disagree on maps {start}+: {sequences}")
                    if round_ == 0:
                        probabilities[real] += answers["batch-invariant"][1]
            mean = {name: 1e3 * float(np.mean(t)) for name, t in times.items() if t}
            base = mean["batch-invariant"]
            print(f"{real} real map(s) a call: " + ", ".join(
                f"{name} {ms:.2f} ms ({ms / base:.2f}x)" for name, ms in mean.items())
                + f" ({len(times['batch-invariant'])} calls each, answers equal)")
    same = probabilities[1] == probabilities[args.chunk]
    print(f"batch-invariant probabilities, each map alone vs in calls of {args.chunk}: "
          f"{'equal bit for bit' if same else 'DIFFERENT'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
