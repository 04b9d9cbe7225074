"""LaTeX-OCR: is data generation a bottleneck? Generator images/s vs training samples/s.

    python bench/latex_generator.py [--config configs/latex-ocr-mt.json] [--images 200]
                                    [--steps 3]

Measured in one run, in one process, on the same threads: (1) the domain's `sample` on
consecutive training seeds (grammar, mathtext layout, rasterising, noise) plus `batch`
(the tensor the model reads); (2) full training steps (forward, sequence + presence +
sparsity loss, backward, Adam) of the config's model on a batch of the config's size,
with its channels-last and bf16 settings, after one warm-up step, at the initial density
(0.5: the thresholds need a k-th value over every activation) and at the target density
(a small top-k), since a run spends most of its steps near the target. The trainer generates
each batch synchronously before its step, so the ratio is the share of wall time that
generation adds: at ratio R it is 1 / (1 + R) of the run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sparling_core.domains import get_domain
from sparling_core.models.sparling import (
    IGNORE,
    ModelConfig,
    SparlingModel,
    encode_labels,
    presence_targets,
)
from sparling_core.training.loop import TrainConfig


def load_config(path: Path) -> TrainConfig:
    """The training config as `sparling train --config` builds it (domain fields fixed)."""
    data = json.loads(path.read_text())
    model = dict(data.get("model", {}))
    domain = get_domain(model.get("domain"))
    fixed = domain.model_config_overrides()
    model = {**model, **{k: v for k, v in fixed.items()
                         if k != "motif_channels" or "motif_channels" not in model},
             "domain": domain.name}
    return TrainConfig.from_dict({**data, "model": model})


def bench_generator(domain, n: int) -> tuple[float, float]:
    """(images/s of sample + batch, ms of the grammar alone per image)."""
    import numpy as np

    from sparling_core.domains import latex_ocr

    domain.sample(0)  # build the renderer (imports matplotlib, loads fonts)
    seeds = list(range(1000, 1000 + n))
    start = time.perf_counter()
    for i in range(0, n, 16):
        domain.batch(domain.samples(seeds[i:i + 16]))
    images_per_s = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for s in seeds:
        latex_ocr.sample_tokens(np.random.default_rng(s))
    grammar_ms = 1000 * (time.perf_counter() - start) / n
    return images_per_s, grammar_ms


def bench_training(config: TrainConfig, domain, steps: int, density: float | None = None
                   ) -> tuple[float, list[float]]:
    """(training samples/s from the median step, step seconds) at the bottleneck's
    `density` (None: the initial one, where the thresholds' selection is the costliest)."""
    torch.manual_seed(config.seed)
    model = SparlingModel(config.model)
    if density is not None:
        model.set_density(density)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    images, labels = domain.batch(domain.samples(range(config.batch_size)))
    if config.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    inputs, targets = encode_labels(labels, config.model.max_digits, config.model.vocab_size)
    presence = presence_targets(labels, config.model.vocab_size)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
            output = model(images, inputs)
        loss = (F.cross_entropy(output.logits.flatten(0, 1), targets.flatten(),
                                ignore_index=IGNORE)
                + output.penalty + config.model.presence_weight
                * F.binary_cross_entropy_with_logits(output.presence_logits, presence))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return config.batch_size / statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/latex-ocr-mt.json"))
    parser.add_argument("--images", type=int, default=200, help="images to generate")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the config's)")
    args = parser.parse_args()

    config = load_config(args.config)
    threads = args.threads or config.threads
    if threads:
        torch.set_num_threads(threads)
    domain = get_domain(config.model.domain)
    m: ModelConfig = config.model
    print(f"config {args.config}: domain {domain.name}, batch {config.batch_size}, motif model "
          f"width {m.motif_width} x {m.motif_layers} layers (phase_tied={m.phase_tied}), "
          f"{m.motif_channels} channels, decoder {m.decoder} ({m.max_points} points), "
          f"bf16={config.bf16}, {torch.get_num_threads()} torch threads")

    images_per_s, grammar_ms = bench_generator(domain, args.images)
    print(f"generator: {images_per_s:.1f} images/s ({1000 / images_per_s:.1f} ms per image, "
          f"of which the grammar {grammar_ms:.1f} ms), {args.images} training seeds, "
          "sample + batch, one thread")
    # the step's cost depends on the density: at the initial 0.5 the thresholds come from a
    # k-th value over every activation of a channel, at the target from a small top-k
    fastest = 0.0
    for label, density in (("initial", None), ("target", config.target_density)):
        samples_per_s, times = bench_training(config, domain, args.steps, density)
        fastest = max(fastest, samples_per_s)
        shown = config.model.initial_density if density is None else density
        print(f"training step at the {label} density {shown:.3g}: {samples_per_s:.2f} "
              f"samples/s (median of {args.steps} steps of {config.batch_size}: "
              f"{', '.join(f'{t:.2f}' for t in times)} s)")
    ratio = images_per_s / fastest
    print(f"ratio: the generator is {ratio:.0f}x faster than the fastest training step; "
          f"generating a batch adds at most {100 / (1 + ratio):.1f}% to the run's wall time")


if __name__ == "__main__":
    main()
