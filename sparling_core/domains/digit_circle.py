"""DigitCircle: 3 to 6 distinct digits placed around a circle in a noisy 100x100 image.

The answer is the digit sequence in counter-clockwise order, rotated so that the smallest
digit comes first. Every image is drawn from one seeded generator, so a seed is a sample.
See SPEC section 2 for the numbers implemented here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from .base import Domain, Sample, register
from .base import Motif as GenericMotif

IMAGE_SIZE = 100
NUM_DIGITS = 10
MIN_DIGITS, MAX_DIGITS = 3, 6
# SPEC 2: mean ink fraction of the paper's stamps; the pre-noise flips pixels at b / 2 so
# that local ink density does not give digits away. Our FreeType build inks slightly less
# (see scripts/render_stamps.py); we keep the SPEC's constant so the noise is the paper's.
MEAN_INK_FRACTION = 0.2504
POST_NOISE = 0.05
RADIUS_RANGE = (20, 34)  # inclusive
JITTER = 3

# Fixed, disjoint seed ranges. Training draws fresh seeds from [0, VALIDATION_SEEDS_START).
VALIDATION_SEEDS_START = 1_000_000_000
TEST_SEEDS_START = 2_000_000_000
SPLIT_SIZE = 1_000_000_000


@lru_cache(maxsize=1)
def stamps() -> tuple[np.ndarray, ...]:
    """The ten digit stamps as uint8 arrays (12 x width), 1 = ink. Rendered by
    scripts/render_stamps.py and shipped with the package."""
    text = resources.files("sparling_core.domains").joinpath("digit_stamps.json").read_text()
    raw = json.loads(text)["stamps"]
    return tuple(np.asarray(raw[str(d)], dtype=np.uint8) for d in range(NUM_DIGITS))


@dataclass(frozen=True)
class Motif:
    """One placed digit: its symbol, centre (row, col) and pasted box
    (row0, col0, row1, col1), end-exclusive."""

    digit: int
    center: tuple[int, int]
    box: tuple[int, int, int, int]

    def to_dict(self) -> dict:
        return {"digit": self.digit, "center": list(self.center), "box": list(self.box)}


@dataclass
class DigitCircleSample:
    seed: int
    image: np.ndarray  # (100, 100) uint8 in {0, 1}
    label: list[int]  # the digit sequence, smallest digit first
    motifs: list[Motif] = field(default_factory=list)  # in placement (angle) order

    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "label": self.label,
            "motifs": [m.to_dict() for m in self.motifs],
        }


def sample(seed: int) -> DigitCircleSample:
    """Draw the DigitCircle image for `seed` (deterministic), with label and motifs."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    size = IMAGE_SIZE
    # 1. pre-noise on an empty image
    image = (rng.random((size, size)) < MEAN_INK_FRACTION * 0.5).astype(np.uint8)
    # 2. circle
    radius = int(rng.integers(RADIUS_RANGE[0], RADIUS_RANGE[1] + 1))
    centre = rng.integers(radius + 15, 84 - radius + 1, size=2)
    # 3. which digits
    n = int(rng.integers(MIN_DIGITS, MAX_DIGITS + 1))
    digits = rng.choice(NUM_DIGITS, size=n, replace=False)
    # 4. angles: weights redrawn until none is below 1 / (2n), so digits keep apart
    while True:
        weights = rng.random(n)
        weights = weights / weights.sum()
        if (weights >= 1 / (2 * n)).all():
            break
    angles = (np.cumsum(weights) + rng.random()) * 2 * np.pi
    # 5. paste stamps; later stamps overwrite the whole box of earlier ones
    motifs = []
    all_stamps = stamps()
    for digit, angle in zip(digits, angles, strict=True):
        stamp = all_stamps[digit]
        h, w = stamp.shape
        row = int(np.round(centre[0] + radius * np.cos(angle))) + int(
            rng.integers(-JITTER, JITTER + 1)
        )
        col = int(np.round(centre[1] + radius * np.sin(angle))) + int(
            rng.integers(-JITTER, JITTER + 1)
        )
        r0, c0 = row - h // 2, col - w // 2
        image[r0 : r0 + h, c0 : c0 + w] = stamp
        motifs.append(Motif(int(digit), (row, col), (r0, c0, r0 + h, c0 + w)))
    # 6. post-noise
    image ^= (rng.random((size, size)) < POST_NOISE).astype(np.uint8)
    return DigitCircleSample(int(seed), image, label_for(motifs), motifs)


def label_for(motifs: list[Motif]) -> list[int]:
    """Digits in increasing angle (their placement order), rotated so the smallest is first."""
    digits = [m.digit for m in motifs]
    start = digits.index(min(digits))
    return digits[start:] + digits[:start]


def theoretical_min_density(channels: int = NUM_DIGITS, size: int = IMAGE_SIZE) -> float:
    """One active (channel, pixel) per digit: E[digits per image] / (C * H * W) = 4.5e-5.

    The paper quotes 4.492e-5, its measured mean over a finite sample; evaluation reports
    the exact minimum of the evaluated images too (`metrics.min_density`)."""
    mean_digits = (MIN_DIGITS + MAX_DIGITS) / 2
    return mean_digits / (channels * size * size)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (H, W) 0/1 images -> float tensor (N, 1, H, W)."""
    t = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    if t.dim() == 2:
        t = t[None]
    return t[:, None]


def collate(samples: list[DigitCircleSample]) -> tuple[torch.Tensor, list[list[int]]]:
    images = images_to_tensor(np.stack([s.image for s in samples]))
    return images, [s.label for s in samples]


class DigitCircleSeeds(Dataset):
    """A fixed range of seeds, e.g. the validation or test split."""

    def __init__(self, first_seed: int, n: int):
        if n < 0 or first_seed < 0:
            raise ValueError("first_seed and n must be non-negative")
        self.first_seed, self.n = first_seed, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> DigitCircleSample:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return sample(self.first_seed + i)

    @classmethod
    def validation(cls, n: int = 2000) -> DigitCircleSeeds:
        return cls(VALIDATION_SEEDS_START, n)

    @classmethod
    def test(cls, n: int = 10_000) -> DigitCircleSeeds:
        return cls(TEST_SEEDS_START, n)


class DigitCircleStream(IterableDataset):
    """The endless training stream: seeds start, start + 1, ... below the validation range.

    `start` is the data position; the trainer saves it so a resumed run sees the same data."""

    def __init__(self, start: int = 0):
        self.start = start

    def __iter__(self):
        info = get_worker_info()
        step, offset = (1, 0) if info is None else (info.num_workers, info.id)
        seed = self.start + offset
        while seed < VALIDATION_SEEDS_START:
            yield sample(seed)
            seed += step


class DigitCircle(Domain):
    """DigitCircle through the Domain interface: the same images, labels and motifs as
    `sample(seed)`, with tokens and symbols as the strings "0" .. "9"."""

    name = "digit-circle"
    description = "3 to 6 distinct digits around a circle in a noisy 100x100 image (SPEC 2)"
    label_rule = ("the digits in order of increasing angle around the circle (counter-clockwise "
                  "on screen), rotated so that the smallest digit comes first: the same digits "
                  "at the same places always give the same label, and moving one digit past "
                  "another swaps them; adding the smallest digit anywhere rotates the rest")
    image_shape = (IMAGE_SIZE, IMAGE_SIZE)
    vocabulary = tuple(str(d) for d in range(NUM_DIGITS))
    max_label_length = MAX_DIGITS
    min_label_length = 1  # an empty answer is never right
    symbols = tuple(str(d) for d in range(NUM_DIGITS))
    assignment = "one-to-one"
    motif_channels = NUM_DIGITS

    def sample(self, seed: int, split: str = "train") -> Sample:
        s = sample(seed)
        return Sample(s.seed, s.image, [str(d) for d in s.label],
                      [GenericMotif(str(m.digit), m.center, m.box) for m in s.motifs])

    def split_range(self, split: str) -> range:
        self.check_split(split)
        start = {"train": 0, "val": VALIDATION_SEEDS_START, "test": TEST_SEEDS_START}[split]
        return range(start, start + SPLIT_SIZE)

    def theoretical_min_density(self, channels: int | None = None) -> float:
        return theoretical_min_density(channels or NUM_DIGITS)


DIGIT_CIRCLE = register(DigitCircle())
