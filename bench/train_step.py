"""Training throughput and cost per sample: our DigitCircle model vs the paper's reference.

    python bench/train_step.py [--steps 5] [--batch-size 32]

The reference architecture (SPEC 5) is built here only for this comparison: 1x1 conv to 64,
4 pre-activation residual units (two 3x3 convs of width 64 each), 1x1 conv to 10, the MT
bottleneck, 1x1 conv 10 -> 512, max-pool 8 (to 12x12), a bidirectional LSTM over each row,
a 6-layer transformer encoder and a 6-layer transformer decoder (d=512, 8 heads). Both train
one full step (forward, backward, Adam) on the same DigitCircle batch size. Floating point
operations are counted by torch's FlopCounterMode (forward + backward; the LSTM's own
kernels are not counted, so the reference figure is a lower bound).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sparling_core.domains import digit_circle as dc
from sparling_core.layers.sparsity import SpatialSparsity
from sparling_core.models.sparling import IGNORE, SparlingModel, digit_circle_small, encode_labels


class _PreActUnit(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(width), nn.BatchNorm2d(width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))


class ReferenceModel(nn.Module):
    """The paper's DigitCircle model, rebuilt for the benchmark (about 46M parameters)."""

    def __init__(self, d: int = 512):
        super().__init__()
        self.motif = nn.Sequential(nn.Conv2d(1, 64, 1), *[_PreActUnit(64) for _ in range(4)],
                                   nn.Conv2d(64, 10, 1))
        self.bottleneck = SpatialSparsity(10, 1 - 5e-5)
        self.up = nn.Conv2d(10, d, 1)
        self.lstm = nn.LSTM(d, d // 2, batch_first=True, bidirectional=True)
        self.transformer = nn.Transformer(d, 8, 6, 6, dim_feedforward=2048, dropout=0.0,
                                          batch_first=True)
        self.embed = nn.Embedding(12, d)
        self.pos = nn.Parameter(torch.zeros(1, 144, d))
        self.out = nn.Linear(d, 11)

    def forward(self, images, inputs):
        x = self.up(self.bottleneck(self.motif(images)))  # (N, d, 100, 100)
        x = F.max_pool2d(x, 8)  # (N, d, 12, 12)
        n, d, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(n * h, w, d)  # each row a sequence
        rows, _ = self.lstm(rows)
        memory = rows.reshape(n, h * w, d) + self.pos
        t = inputs.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(t)
        return self.out(self.transformer(memory, self.embed(inputs), tgt_mask=mask))


def _step_fn(model, optimizer, images, inputs, targets, presence: bool, bf16: bool = False):
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(images, inputs)
        logits = out.logits if hasattr(out, "logits") else out
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        if presence and out.presence_logits is not None:
            loss = loss + F.binary_cross_entropy_with_logits(
                out.presence_logits, torch.zeros_like(out.presence_logits))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def measure(name, model, batch_size, steps, presence=False, fast=False):
    """fast: bf16 autocast for the motif model's inner convs and channels-last memory,
    as the trainer does by default."""
    images, labels = dc.collate([dc.sample(i) for i in range(batch_size)])
    inputs, targets = encode_labels(labels, 6)
    if fast:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    step = _step_fn(model, optimizer, images, inputs, targets, presence, bf16=fast)
    step()  # warm-up
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops() / batch_size
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    rate = batch_size / statistics.median(times)
    params = sum(p.numel() for p in model.parameters())
    print(f"{name:>10} {params / 1e6:>8.3f}M {rate:>12.1f} {flops / 1e9:>12.2f}")
    return rate, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch "
          f"{args.batch_size}, median of {args.steps} full training steps (fp32)")
    print("'ours' (the shipped, phase-tied model) trains as the trainer does (bf16 "
          "autocast + channels-last); 'ours fp32' without; 'untied' is the half-resolution "
          "motif model without phase tying; the reference in fp32")
    print(f"{'model':>10} {'params':>9} {'samples/s':>12} {'GFLOP/sample':>12}")
    torch.manual_seed(0)
    ours = SparlingModel(digit_circle_small())
    ours.train()
    r_fp32, _ = measure("ours fp32", ours, args.batch_size, args.steps, presence=True)
    torch.manual_seed(0)
    ours = SparlingModel(digit_circle_small())
    ours.train()
    r_ours, f_ours = measure("ours", ours, args.batch_size, args.steps, presence=True, fast=True)
    torch.manual_seed(0)
    untied = SparlingModel(replace(digit_circle_small(), phase_tied=False))
    untied.train()
    r_untied, f_untied = measure("untied", untied, args.batch_size, args.steps, presence=True,
                                 fast=True)
    ref = ReferenceModel()
    ref.train()
    r_ref, f_ref = measure("reference", ref, args.batch_size, max(2, args.steps // 2))
    print(f"bf16_channels_last_speedup={r_ours / r_fp32:.2f}")
    print(f"phase_tied_cost_samples_per_s={r_untied / r_ours:.2f}")
    print(f"phase_tied_cost_flops={f_ours / f_untied:.2f}")
    print(f"speedup_samples_per_s={r_ours / r_ref:.1f}")
    print(f"flops_ratio_reference_over_ours={f_ref / f_ours:.1f}")


if __name__ == "__main__":
    main()
