"""The decoder's greedy loop with and without its early stop (`SparlingModel.decode_motifs`,
`stop_early`), on the maps of test images, in the service's shape: each map decoded in a
fixed chunk of `--chunk` maps (`decode_in_fixed_batches`), the chunk filled with copies.

    .venv/bin/python bench/decode.py                        # checkpoints/digit-circle-mt
    .venv/bin/python bench/decode.py --checkpoint PATH --images 64 --rounds 8

For 1 real map a chunk (a lone request) and for full chunks (a busy server), the two
variants alternate call by call over `--rounds` passes through the images, so both see the
same machine; the figures are the mean milliseconds per chunk and their ratio. The answers
are checked equal (the early stop only skips steps after every map's end token).
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

from sparling_core.checkpoint import load_checkpoint  # noqa: E402
from sparling_core.domains import digit_circle as dc  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=REPO / "checkpoints" / "digit-circle-mt")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=8, help="the decoder's fixed chunk")
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
    with torch.inference_mode():
        images, _ = dc.collate(samples)
        maps = model.sparse_motifs(images)
        for real in (1, args.chunk):
            times = {False: [], True: []}
            for _ in range(args.rounds):
                for start in range(0, args.images, real):
                    part = maps[start:start + real]
                    part = torch.cat([part, part[-1:].expand(args.chunk - part.shape[0],
                                                             *part.shape[1:])])
                    answers = {}
                    for stop in (False, True):
                        t = time.perf_counter()
                        answers[stop] = model.decode_motifs(part, stop_early=stop)
                        times[stop].append(time.perf_counter() - t)
                    if answers[True] != answers[False]:
                        raise SystemExit(f"the early stop changed an answer (maps {start}+)")
            every, early = (1e3 * float(np.mean(times[s])) for s in (False, True))
            print(f"{real} real map(s) a chunk: every step {every:.2f} ms, early stop "
                  f"{early:.2f} ms a chunk: {every / early:.2f}x ({len(times[True])} chunks, "
                  "answers equal)")


if __name__ == "__main__":
    main()
