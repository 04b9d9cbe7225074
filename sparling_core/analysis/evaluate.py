"""Run a model over a domain's test images and report the motif metrics (SPEC 3)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from ..domains import Domain, Sample, get_domain
from ..models.sparling import SparlingModel
from .metrics import MotifStats, align_image

__all__ = ["evaluate", "exact_match_accuracy", "motif_boxes", "validate", "Validation",
           "PAPER_DENSITY", "PAPER_RESULTS"]

# SPEC 1.3 / 4: the paper evaluates at 0.5 * 0.75**32 = 5.0226e-5 (1.118x the minimum).
PAPER_DENSITY = 0.5 * 0.75**32
PAPER_RESULTS = {  # SPEC 4, DigitCircle, means over 9 seeds, percent
    "mt": {"e2ee": 0.74, "fpe": 1.48, "fne": 0.42, "ce": 1.16, "density": 5.02e-5},
    "st": {"e2ee": 2.11, "fpe": 0.0025, "fne": 0.98, "ce": 22.19, "density": 5.02e-5},
}


class Validation(NamedTuple):
    accuracy: float  # exact-match sequence accuracy
    density: float  # realised density of the sparse maps
    peaks: torch.Tensor  # (N, C): each image's strongest sparse activation per channel


def motif_boxes(domain: Domain, sample: Sample) -> list[tuple[int, tuple[int, int, int, int]]]:
    """A sample's motifs as (symbol index, box) pairs, boxes padded by the domain's
    `box_padding` (align_image clips them to the image)."""
    p = domain.box_padding
    return [(domain.symbol_index(m.symbol),
             (m.box[0] - p, m.box[1] - p, m.box[2] + p, m.box[3] + p)) for m in sample.motifs]


def _batches(domain: Domain, seeds: range, batch_size: int, split: str):
    for start in range(0, len(seeds), batch_size):
        samples = domain.samples(seeds[start:start + batch_size], split)
        yield samples, *domain.batch(samples)


@torch.no_grad()
def evaluate(model: SparlingModel, n: int = 10_000, first_seed: int | None = None,
             batch_size: int = 100, progress: bool = False, domain: Domain | None = None,
             split: str = "test") -> dict:
    """Evaluate in eval mode on the domain's seeds first_seed .. first_seed + n - 1 (default:
    the start of `split`): FPE, FNE, CE, E2EE (percent), realised density and its ratio to
    the minimum, confusion table and channel-to-symbol assignment. The domain defaults to
    the one the model was trained on; FPE / FNE / CE are None when it has no motifs. The
    model runs on the device its weights are on; the alignment runs on the CPU."""
    if n < 1:
        raise ValueError("n must be >= 1")
    domain = domain or get_domain(model.config.domain)
    first = domain.first_seed(split) if first_seed is None else first_seed
    seeds = range(first, first + n)
    if seeds.stop > domain.split_range(split).stop and split != "train":
        raise ValueError(f"{domain.name} has {len(domain.split_range(split))} {split} "
                         f"images from {domain.split_range(split).start}; asked for "
                         f"{first} .. {seeds.stop - 1}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    c = model.config.motif_channels
    stats = MotifStats(digits=len(domain.symbols), channels=c,
                       assignment=domain.assignment_for(c))
    bar = tqdm(total=n, desc="evaluate", disable=not progress, unit="img")
    try:
        for samples, images, labels in _batches(domain, seeds, batch_size, split):
            decoded = model.generate(images.to(device))
            motifs = decoded.motifs.cpu()
            active = model.bottleneck.active(decoded.motifs).cpu()
            for i, s in enumerate(samples):
                alignment = align_image(motifs[i], motif_boxes(domain, s), active[i])
                stats.add_alignment(alignment, motifs[i].numel())
                stats.add_sequence(decoded.sequences[i], labels[i])
            bar.update(len(samples))
    finally:
        bar.close()
        model.train(was_training)
    report = stats.report()
    if not domain.has_motifs:
        for key in ("fpe", "fne", "ce", "density_ratio", "min_density"):
            report[key] = None
    report.update(first_seed=first, domain=domain.name, split=split,
                  nominal_density=model.density, symbols=list(domain.symbols),
                  theoretical_min_density=domain.theoretical_min_density(c))
    return report


@torch.no_grad()
def validate(model: SparlingModel, images: torch.Tensor, labels: list[list[int]],
             batch_size: int = 250) -> Validation:
    """Exact-match accuracy, realised density and each image's strongest sparse activation
    per channel (N, C), in eval mode on given images: one forward gives what the training
    loop logs at a validation (see `detector_coverage` for what the peaks tell)."""
    was_training = model.training
    model.eval()
    correct, active, total, peaks = 0, 0, 0, []
    try:
        for start in range(0, len(labels), batch_size):
            decoded = model.generate(images[start : start + batch_size])
            correct += sum(p == t for p, t in zip(decoded.sequences,
                                                  labels[start : start + batch_size],
                                                  strict=True))
            active += int(model.bottleneck.active(decoded.motifs).sum())
            total += decoded.motifs.numel()
            peaks.append(decoded.motifs.float().amax(dim=(2, 3)).cpu())
    finally:
        model.train(was_training)
    return Validation(correct / len(labels), active / total, torch.cat(peaks))


def exact_match_accuracy(model: SparlingModel, images: torch.Tensor, labels: list[list[int]],
                         batch_size: int = 250) -> tuple[float, float]:
    """(exact-match sequence accuracy, realised density) in eval mode on given images."""
    result = validate(model, images, labels, batch_size)
    return result.accuracy, result.density
