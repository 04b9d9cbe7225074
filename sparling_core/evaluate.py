"""Run a model over fixed DigitCircle seeds and report the motif metrics (SPEC 3)."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from .domains import digit_circle as dc
from .metrics import MotifStats, align_image
from .model import SparlingModel

__all__ = ["evaluate", "exact_match_accuracy", "PAPER_DENSITY", "PAPER_RESULTS"]

# SPEC 1.3 / 4: the paper evaluates at 0.5 * 0.75**32 = 5.0226e-5 (1.118x the minimum).
PAPER_DENSITY = 0.5 * 0.75**32
PAPER_RESULTS = {  # SPEC 4, DigitCircle, means over 9 seeds, percent
    "mt": {"e2ee": 0.74, "fpe": 1.48, "fne": 0.42, "ce": 1.16, "density": 5.02e-5},
    "st": {"e2ee": 2.11, "fpe": 0.0025, "fne": 0.98, "ce": 22.19, "density": 5.02e-5},
}


def _batches(first_seed: int, n: int, batch_size: int):
    for start in range(0, n, batch_size):
        samples = [dc.sample(first_seed + i) for i in range(start, min(n, start + batch_size))]
        yield samples, dc.images_to_tensor(np.stack([s.image for s in samples]))


@torch.no_grad()
def evaluate(model: SparlingModel, n: int = 10_000, first_seed: int = dc.TEST_SEEDS_START,
             batch_size: int = 100, progress: bool = False) -> dict:
    """Evaluate in eval mode on seeds first_seed .. first_seed + n - 1: FPE, FNE, CE, E2EE
    (percent), realised density and its ratio to the minimum, confusion table and
    channel-to-digit assignment."""
    if n < 1:
        raise ValueError("n must be >= 1")
    was_training = model.training
    model.eval()
    c = model.config.motif_channels
    stats = MotifStats(digits=dc.NUM_DIGITS, channels=c)
    bar = tqdm(total=n, desc="evaluate", disable=not progress, unit="img")
    try:
        for samples, images in _batches(first_seed, n, batch_size):
            decoded = model.generate(images)
            active = model.bottleneck.active(decoded.motifs)
            for i, s in enumerate(samples):
                alignment = align_image(decoded.motifs[i], s.motifs, active[i])
                stats.add_alignment(alignment, decoded.motifs[i].numel())
                stats.add_sequence(decoded.sequences[i], s.label)
            bar.update(len(samples))
    finally:
        bar.close()
        model.train(was_training)
    report = stats.report()
    report.update(first_seed=first_seed, nominal_density=model.density,
                  theoretical_min_density=dc.theoretical_min_density(c))
    return report


@torch.no_grad()
def exact_match_accuracy(model: SparlingModel, images: torch.Tensor, labels: list[list[int]],
                         batch_size: int = 250) -> tuple[float, float]:
    """(exact-match sequence accuracy, realised density) in eval mode on given images."""
    was_training = model.training
    model.eval()
    correct, active, total = 0, 0, 0
    try:
        for start in range(0, len(labels), batch_size):
            decoded = model.generate(images[start : start + batch_size])
            correct += sum(p == t for p, t in zip(decoded.sequences,
                                                  labels[start : start + batch_size],
                                                  strict=True))
            active += int(model.bottleneck.active(decoded.motifs).sum())
            total += decoded.motifs.numel()
    finally:
        model.train(was_training)
    return correct / len(labels), active / total
