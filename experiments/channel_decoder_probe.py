"""How fast can a decoder learn to read DigitCircle's answer from clean motif maps?

Trains decoders alone (no motif model) on synthetic sparse maps made from the ground truth:
each digit fires one pixel of its own channel (a fixed random permutation of digits to
channels, as a trained model's would be), at its centre plus a fixed offset per channel
(trained channels fire beside the centre, each at its own offset: up to 5 px in the
shipped checkpoint) plus a +-`--jitter` px wobble, with a value drawn from [0.3, 3]. With
`--extra P`, an image gets, with probability P, one weak activation of another channel on
one of its digits (the false positives the trained maps still have). Fresh images every
step, as in training; the same test images for every variant.

With `--maps CHECKPOINT`, the maps are instead that checkpoint's own sparse maps (its motif
model and bottleneck frozen, eval mode), of `--train` fixed training images drawn from at
random (and the first `--test` test images): a fresh decoder on a trained model's real
maps, false positives, offsets and all.

    python experiments/channel_decoder_probe.py --variants plain,neighbours --samples 120000
    python experiments/channel_decoder_probe.py --maps CKPT --train 10000 --samples 120000

It prints exact match on the test maps as training goes, per variant. The decoders are
the model's own (`ModelConfig` with the recipe's sizes): `plain` is the recipe's, the
others change one or two of its settings (VARIANTS). A decoder that needs many more
samples here than the motif model needs to reach clean motifs limits a short recipe.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sparling_core.checkpoint import load_checkpoint
from sparling_core.domains import get_domain
from sparling_core.domains.digit_circle import sample
from sparling_core.models.sparling import (
    IGNORE,
    ChannelDecoder,
    ModelConfig,
    SparlingModel,
    encode_labels,
)

VARIANTS = {
    "plain": {},  # the recipe's decoder
    "neighbours": {"cyclic_neighbours": True},
    "wide": {"d_model": 128},
    "deep": {"encoder_layers": 3, "decoder_layers": 3},
    "neighbours-wide": {"cyclic_neighbours": True, "d_model": 128},
}
TEST_FIRST = 2_000_000_000  # DigitCircle's test seeds


class SyntheticMaps:
    """Sparse motif maps from the ground truth (see the module docstring)."""

    def __init__(self, seed: int, jitter: int, extra: float, size: int = 100, channels: int = 10):
        rng = np.random.default_rng(seed)
        self.channel_of = rng.permutation(channels)  # digit -> channel
        self.offset = rng.integers(-4, 5, size=(channels, 2))  # per channel (row, col)
        self.jitter, self.extra, self.size, self.channels = jitter, extra, size, channels

    def batch(self, seeds: range) -> tuple[Summaries, list[list[int]]]:
        maps = torch.zeros(len(seeds), self.channels, self.size, self.size)
        labels = []
        for i, seed in enumerate(seeds):
            s = sample(seed)
            rng = np.random.default_rng(seed + 12345)
            for m in s.motifs:
                c = self.channel_of[m.digit]
                r, q = np.clip(np.array(m.center) + self.offset[c]
                               + rng.integers(-self.jitter, self.jitter + 1, 2), 0, self.size - 1)
                maps[i, c, r, q] = float(rng.uniform(0.3, 3.0))
            if self.extra and rng.random() < self.extra:
                m = s.motifs[rng.integers(len(s.motifs))]
                c = self.channel_of[(m.digit + rng.integers(1, 10)) % 10]
                r, q = np.clip(np.array(m.center) + rng.integers(-2, 3, 2), 0, self.size - 1)
                maps[i, c, r, q] = float(rng.uniform(0.05, 0.5))
            labels.append(s.label)
        return summaries(maps), labels

    def test(self, n: int) -> tuple[Summaries, list[list[int]]]:
        return self.batch(range(TEST_FIRST, TEST_FIRST + n))


Summaries = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # ChannelDecoder.summarise's


@functools.cache
def _reader(channels: int, size: int) -> ChannelDecoder:
    return ChannelDecoder(channels, size, 8, 1, 0, 0, 2)  # only its summarise is used


def summaries(maps: torch.Tensor) -> Summaries:
    """What the channel decoder reads of a batch of maps (no parameters involved)."""
    return _reader(maps.shape[1], maps.shape[-1]).summarise(maps)


class FrozenMaps:
    """A checkpoint's own sparse maps of fixed images, kept as decoder summaries."""

    def __init__(self, checkpoint: Path, train: int, test: int):
        self.model = load_checkpoint(checkpoint).model.eval()
        self.domain = get_domain(self.model.config.domain)
        first = self.domain.first_seed("train") + 10**8  # images the model never trained on
        self.train = self._summaries(range(first, first + train))
        self.generator = torch.Generator().manual_seed(0)

    def _summaries(self, seeds: range) -> tuple[Summaries, list[list[int]]]:
        parts, labels = [], []
        for lo in range(seeds.start, seeds.stop, 100):
            images, lab = self.domain.batch(self.domain.samples(
                range(lo, min(lo + 100, seeds.stop)), "train"))
            with torch.no_grad():
                parts.append(summaries(self.model.sparse_motifs(images)))
            labels += lab
        return tuple(torch.cat([p[k] for p in parts]) for k in range(3)), labels

    def test(self, n: int) -> tuple[Summaries, list[list[int]]]:
        first = self.domain.first_seed("test")
        return self._summaries(range(first, first + n))

    def batch(self, seeds: range) -> tuple[Summaries, list[list[int]]]:
        index = torch.randint(0, len(self.train[1]), (len(seeds),), generator=self.generator)
        return (tuple(t[index] for t in self.train[0]),
                [self.train[1][i] for i in index.tolist()])


def decode(model: SparlingModel, summary: Summaries) -> list[list[int]]:
    """Greedy decoding from summaries, as `SparlingModel.decode_motifs` from maps."""
    memory, mask = model.decoder.encode_summary(*summary)
    tokens = torch.full((len(memory), 1), model.config.bos, dtype=torch.long)
    for _ in range(model.config.max_digits + 1):
        logits = model.decoder(memory, mask, tokens)[:, -1]
        if tokens.shape[1] <= model.config.min_length:
            logits[:, model.config.eos] = -math.inf
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], 1)
    out = []
    for row in tokens[:, 1:].tolist():
        out.append(row[:row.index(model.config.eos)] if model.config.eos in row else row)
    return out


def exact_match(model: SparlingModel, test: tuple[Summaries, list[list[int]]]) -> float:
    summary, labels = test
    model.eval()
    right = 0
    with torch.no_grad():
        for lo in range(0, len(labels), 250):
            predicted = decode(model, tuple(t[lo:lo + 250] for t in summary))
            right += sum(p == list(t) for p, t in zip(predicted, labels[lo:lo + 250],
                                                      strict=True))
    model.train()
    return 100.0 * right / len(labels)


def train_variant(name: str, data: SyntheticMaps | FrozenMaps, test: tuple[Summaries, list],
                  samples: int, batch_size: int, lr: float, finish_lr: float, every: int,
                  seed: int) -> list[dict]:
    torch.manual_seed(seed)
    config = ModelConfig(**VARIANTS[name])
    model = SparlingModel(config)
    params = list(model.decoder.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    curve, seen, start = [], 0, time.perf_counter()
    while seen < samples:
        summary, labels = data.batch(range(seed * 10**8 + seen,
                                           seed * 10**8 + seen + batch_size))
        inputs, targets = encode_labels(labels, config.max_digits, config.vocab_size)
        memory, mask = model.decoder.encode_summary(*summary)
        logits = model.decoder(memory, mask, inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        cosine = 0.5 * (1 + math.cos(math.pi * seen / samples))  # to finish_lr * lr
        for group in optimizer.param_groups:
            group["lr"] = lr * (finish_lr + (1 - finish_lr) * cosine)
        optimizer.step()
        seen += batch_size
        if seen % every < batch_size or seen >= samples:
            row = {"variant": name, "samples": seen, "exact_match": exact_match(model, test),
                   "loss": round(loss.item(), 4), "wall_s": round(time.perf_counter() - start, 1)}
            print(json.dumps(row), flush=True)
            curve.append(row)
    return curve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="plain,neighbours")
    p.add_argument("--samples", type=int, default=120_000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--finish-lr", type=float, default=0.1)
    p.add_argument("--every", type=int, default=20_000, help="test every this many samples")
    p.add_argument("--test", type=int, default=2000, help="test images")
    p.add_argument("--jitter", type=int, default=1)
    p.add_argument("--extra", type=float, default=0.0)
    p.add_argument("--maps", type=Path, default=None,
                   help="a checkpoint whose frozen sparse maps to train on (default: synthetic)")
    p.add_argument("--train", type=int, default=10_000,
                   help="with --maps: how many fixed training images (default 10,000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    if args.samples < args.batch_size or args.test < 1:
        p.error("--samples must be >= --batch-size and --test >= 1")
    if args.maps is not None and not (args.maps / "config.json").is_file():
        p.error(f"{args.maps} is not a checkpoint folder")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data = (SyntheticMaps(args.seed, args.jitter, args.extra) if args.maps is None
            else FrozenMaps(args.maps, args.train, args.test))
    test = data.test(args.test)
    print(f"maps ready in {time.perf_counter() - start:.0f} s", flush=True)
    if args.maps is not None:  # the reference: the checkpoint's own, trained decoder
        print(json.dumps({"variant": "checkpoint's own decoder",
                          "exact_match": exact_match(data.model, test)}), flush=True)
    curves = {v: train_variant(v, data, test, args.samples, args.batch_size, args.lr,
                               args.finish_lr, args.every, args.seed) for v in variants}
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "curves": curves}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
