"""Threads or processes: how to spend a machine's cores on several training runs.

    python bench/train_threads.py [--cores 2] [--steps 12] [--batch-size 32] [--untied] [--bf16]

Times the full DigitCircle training step (the shipped model: forward, loss, backward, Adam;
channels-last, as the training loop runs it, fp32 unless `--bf16`) in three layouts, each
in fresh processes, one layout after the other:

- one process with `--cores` torch threads (one run using the whole machine),
- one process with 1 thread (the per-run speed of the next layout, alone),
- `--cores` processes with 1 thread each, side by side (several runs at once, as
  `experiments/ablations.py --parallel N --threads 1` trains them, or the ranks of
  `sparling train --nproc N --threads 1`).

It prints samples per second per process and in all, and the last layout's total as a ratio
of the first's. Run it on a quiet machine: it measures what the cores give, not a share of
them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(threads: int, steps: int, batch_size: int, tied: bool, bf16: bool) -> None:
    """One process: `steps` timed training steps after a warm-up; prints samples/s as JSON."""
    sys.path.insert(0, str(ROOT))
    import torch
    import torch.nn.functional as F

    from sparling_core.domains import get_domain
    from sparling_core.models.sparling import IGNORE, ModelConfig, SparlingModel, encode_labels
    from sparling_core.training.loop import _training_batch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = ModelConfig(decoder="channels", phase_tied=tied, motif_width=32, motif_layers=3,
                         d_model=64, initial_density=5e-5)
    model = SparlingModel(config).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    images, labels = _training_batch(get_domain("digit-circle"), 0, batch_size)
    images = images.contiguous(memory_format=torch.channels_last)
    inputs, targets = encode_labels(labels, config.max_digits, config.vocab_size)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(images, inputs)
        loss = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]),
                               targets.reshape(-1), ignore_index=IGNORE) + out.penalty
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    print(json.dumps({"samples_per_s": steps * batch_size / (time.perf_counter() - start)}))


def layout(processes: int, threads: int, args: argparse.Namespace) -> list[float]:
    """samples/s of each of `processes` workers with `threads` threads, started together."""
    command = [sys.executable, __file__, "--worker", str(threads), "--steps", str(args.steps),
               "--batch-size", str(args.batch_size)]
    command += (["--untied"] if args.untied else []) + (["--bf16"] if args.bf16 else [])
    running = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
               for _ in range(processes)]
    rates = []
    for process in running:
        out, _ = process.communicate()
        if process.returncode:
            raise SystemExit(f"a worker failed (exit {process.returncode})")
        rates.append(json.loads(out.strip().splitlines()[-1])["samples_per_s"])
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=int, default=2, help="cores to fill (default 2)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--untied", action="store_true",
                        help="the untied half-resolution motif model (default: phase-tied)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast, as the loop's bf16")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.steps, args.batch_size, not args.untied, args.bf16)
        return
    if args.cores < 2:
        parser.error("--cores must be at least 2")
    one = layout(1, args.cores, args)[0]
    single = layout(1, 1, args)[0]
    side = layout(args.cores, 1, args)
    model = "untied" if args.untied else "phase-tied"
    print(f"{model} model, {'bf16' if args.bf16 else 'fp32'}, batch {args.batch_size}, "
          f"{args.steps} steps per process")
    print(f"1 process x {args.cores} threads:  {one:7.1f} samples/s")
    print(f"1 process x 1 thread:   {single:7.1f} samples/s (alone)")
    print(f"{args.cores} processes x 1 thread: " + " + ".join(f"{r:.1f}" for r in side)
          + f" = {sum(side):.1f} samples/s")
    print(f"ratio, {args.cores} processes x 1 thread / 1 process x {args.cores} threads: "
          f"{sum(side) / one:.2f}x")


if __name__ == "__main__":
    main()
