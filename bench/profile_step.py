"""Where a DigitCircle training step's time goes (issue 15, speed): each part alone, as a
share of the full step measured in the same run.

    python bench/profile_step.py [--reps 5] [--batch-size 32] [--threads 2] [--decoder points]

Parts, each timed as the median of `--reps` repetitions on one fixed batch (after a warm-up):
data (generating the batch's images and labels), the motif model forward + backward (the
phase-tied model as four shifted half-resolution copies, the same function as dilated
convolutions at full resolution (the earlier implementation), and the untied half-resolution
model, for the cost of tying), the sparsity
layer (MT quantile thresholds) forward + backward, the decoder (encode + teacher-forced
logits) forward + backward, the optimiser step, the full step, and the validation (greedy
decoding of `--val-size` images) amortised over the samples between two validations.
Figures are seconds per batch and shares of the full step; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F

from sparling_core.analysis.evaluate import exact_match_accuracy
from sparling_core.domains import get_domain
from sparling_core.models.sparling import IGNORE, ModelConfig, SparlingModel, encode_labels
from sparling_core.training.loop import _training_batch


def timed(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decoder", default="points", choices=["points", "channels", "cells"])
    parser.add_argument("--val-size", type=int, default=500)
    parser.add_argument("--val-every", type=int, default=4000)
    parser.add_argument("--density", type=float, default=5e-5,
                        help="the sparsity layer's target (the end of the schedule)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    domain = get_domain("digit-circle")
    config = ModelConfig(decoder=args.decoder, phase_tied=True, motif_width=32, motif_layers=3,
                         d_model=64, initial_density=args.density)
    model = SparlingModel(config)
    untied = SparlingModel(replace(config, phase_tied=False))
    optimiser = torch.optim.Adam(model.parameters(), 2e-3)
    images, labels = _training_batch(domain, 0, args.batch_size)
    inputs, targets = encode_labels(labels, config.max_digits, config.vocab_size)
    with torch.no_grad():
        dense = model.motif_model(images).float()
        sparse = model.bottleneck(dense)

    fresh = iter(range(1000, 10**9, args.batch_size))  # new seeds every call: no cache hit

    def data() -> None:
        _training_batch(domain, next(fresh), args.batch_size)

    def motif(m: SparlingModel) -> Callable[[], None]:
        def run() -> None:
            m.zero_grad(set_to_none=True)
            m.motif_model(images).sum().backward()
        return run

    def dilated() -> None:
        model.zero_grad(set_to_none=True)
        model.motif_model._all_phases_dilated(images).sum().backward()

    def bottleneck() -> None:
        x = dense.clone().requires_grad_(True)
        model.bottleneck(x).sum().backward()

    def decoder() -> None:
        model.zero_grad(set_to_none=True)
        x = sparse.clone().requires_grad_(True)
        memory, mask = model.decoder.encode(x)
        logits = model.decoder(memory, mask, inputs)
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                        ignore_index=IGNORE).backward()

    def step() -> None:
        out = model(images, inputs)
        loss = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]),
                               targets.reshape(-1), ignore_index=IGNORE) + out.penalty
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    def adam() -> None:
        optimiser.step()

    val_images, val_labels = _training_batch(domain, 10_000_000, args.val_size)

    def validation() -> None:
        exact_match_accuracy(model, val_images, val_labels)

    rows = [
        ("data: generate the batch", timed(data, args.reps)),
        ("motif model fwd+bwd (phase-tied, shifted copies)", timed(motif(model), args.reps)),
        ("motif model fwd+bwd (phase-tied, dilated form: the old one)", timed(dilated, args.reps)),
        ("motif model fwd+bwd (untied, half resolution)", timed(motif(untied), args.reps)),
        ("sparsity layer (MT) fwd+bwd", timed(bottleneck, args.reps)),
        (f"decoder ({args.decoder}) fwd+bwd", timed(decoder, args.reps)),
        ("optimiser step (Adam)", timed(adam, args.reps)),
    ]
    full = timed(step, args.reps)
    val = timed(validation, max(1, args.reps // 3))
    per_batch_val = val * args.batch_size / args.val_every
    rows.append((f"validation ({args.val_size} images, every {args.val_every} samples), "
                 "per batch", per_batch_val))
    print(f"batch {args.batch_size}, {args.threads} threads, decoder {args.decoder}, "
          f"density {args.density:g}")
    print(f"{'part':62s} {'s/batch':>8s} {'x step':>7s}")
    for name, seconds in rows:
        print(f"{name:62s} {seconds:8.3f} {seconds / full:7.2f}")
    print(f"{'full training step (forward, loss, backward, Adam)':62s} {full:8.3f} {1.0:7.2f}")
    total = full + rows[0][1] + per_batch_val
    print(f"samples/s with data and validation in line: {args.batch_size / total:.1f} "
          f"(step alone {args.batch_size / full:.1f}); validation pass {val:.1f} s")


if __name__ == "__main__":
    main()
