"""Training throughput with 1 and N data-parallel processes on this machine.

    .venv/bin/python bench/ddp.py                         # the shipped architecture, 1 and 2
    .venv/bin/python bench/ddp.py --model-size tiny --nproc 1,2,4 --samples 256

Runs the real training loop (`sparling_core.training.loop.train`; N > 1 through
`sparling_core.training.distributed.launch`, gloo, as `sparling train --nproc N` does) for
`--samples` samples at a fixed density with the same global batch, and prints samples per
second as the loop measured it (setup and process start excluded, one 1-image validation
included) and the wall time with process start. One process uses torch's default threads;
N processes get cpu_count // N threads each. On a 2-core machine 2 processes cannot beat 1
(the same cores, plus gradient all-reduces and the sparsity layer's collectives): here the
point is that it runs and agrees; the gain is across machines or GPUs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sparling_core.checkpoint import read_history  # noqa: E402
from sparling_core.models.sparling import digit_circle_small, digit_circle_tiny  # noqa: E402
from sparling_core.training.distributed import launch  # noqa: E402
from sparling_core.training.loop import TrainConfig, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-size", choices=("small", "tiny"), default="small")
    parser.add_argument("--nproc", default="1,2", help="comma-separated process counts")
    parser.add_argument("--batch-size", type=int, default=16, help="the global batch")
    parser.add_argument("--samples", type=int, default=128, help="training samples a run")
    parser.add_argument("--density", type=float, default=1e-3)
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per process (default: see above)")
    args = parser.parse_args()

    model = digit_circle_small() if args.model_size == "small" else digit_circle_tiny()
    model.initial_density = args.density
    print(f"{args.model_size} model, global batch {args.batch_size}, {args.samples} samples, "
          f"density {args.density:g}, bf16 {not args.no_bf16}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, threads per process: "
          f"{args.threads or f'1 process {torch.get_num_threads()}, N: cpu_count // N'}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="sparling-ddp-bench-") as tmp:
        for nproc in [int(n) for n in args.nproc.split(",")]:
            config = TrainConfig(out=str(Path(tmp) / f"n{nproc}"), model=model,
                                 batch_size=args.batch_size, max_samples=args.samples,
                                 val_every=args.samples, val_size=1, schedule="fixed",
                                 bf16=not args.no_bf16, threads=args.threads)
            start = time.perf_counter()
            if nproc == 1:
                train(config, progress=False)
            else:
                launch(config.to_dict(), nproc, progress=False, verbose=False)
            wall = time.perf_counter() - start
            last = read_history(config.out)[-1]
            rows.append((nproc, last["samples_per_s"], wall, last["loss"]))
    print(f"\n{'processes':>9} {'samples/s':>10} {'wall s':>8} {'mean loss':>10}")
    for nproc, rate, wall, loss in rows:
        print(f"{nproc:>9} {rate:>10.1f} {wall:>8.1f} {loss:>10.5f}")
    base = rows[0][1]
    for nproc, rate, _, _ in rows[1:]:
        print(f"{nproc} processes / {rows[0][0]}: {rate / base:.2f}x samples/s")


if __name__ == "__main__":
    main()
