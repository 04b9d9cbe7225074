"""Motif metrics (SPEC 3): FPE, FNE, CE, end-to-end error and density. Pure functions.

For each ground-truth motif (a symbol index and a box), in placement order: the per-channel
maximum of the sparse map inside its box; all zero -> missed, else the predicted channel is
the argmax; then the box is zeroed (several activations in one box count once). Every
nonzero left after all boxes is a false-positive pixel. CE maps channels to symbols either
one-to-one (the assignment that maximises matches, Hungarian algorithm, scipy; DigitCircle)
or many-to-one (each channel to the symbol it most often lands on; LaTeX-OCR, where there
are more channels than symbols), then counts the matched boxes whose channel maps elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = [
    "ASSIGNMENTS",
    "DigitMatch",
    "MotifMatch",
    "ImageAlignment",
    "MotifStats",
    "align_image",
    "channel_assignment",
    "edit_distance",
    "sequence_error",
]


ASSIGNMENTS = ("one-to-one", "many-to-one")


@dataclass
class MotifMatch:
    symbol: int  # index into the domain's symbols
    box: tuple[int, int, int, int]
    channel: int | None  # None: missed
    value: float  # the winning activation (0 when missed)
    row: int | None = None  # where the winning activation sits
    col: int | None = None


DigitMatch = MotifMatch  # the name before the Domain seam


@dataclass
class ImageAlignment:
    matches: list[MotifMatch]
    false_positives: torch.Tensor  # (K, 3) long: channel, row, col of leftover activations
    false_positive_values: torch.Tensor  # (K,)
    active: int  # nonzero values in the map

    @property
    def missed(self) -> int:
        return sum(m.channel is None for m in self.matches)

    @property
    def predicted(self) -> int:
        return sum(m.channel is not None for m in self.matches)


def _motif_fields(motif) -> tuple[int, tuple[int, int, int, int]]:
    """(symbol index, box) from a (symbol, box) pair, or a dict / object with an integer
    `symbol` (or `digit`) and a `box`."""
    if isinstance(motif, tuple) and len(motif) == 2:
        symbol, box = motif
    elif isinstance(motif, dict):
        symbol, box = motif["symbol"] if "symbol" in motif else motif["digit"], motif["box"]
    else:
        symbol, box = getattr(motif, "symbol", None), motif.box
        if not isinstance(symbol, (int, np.integer)):
            symbol = motif.digit
    return int(symbol), tuple(int(v) for v in box)


def align_image(motif_map: torch.Tensor | np.ndarray, motifs: Sequence,
                active: torch.Tensor | np.ndarray | None = None) -> ImageAlignment:
    """Align one sparse map (C, H, W) with its ground-truth motifs: (symbol index, box)
    pairs, or dicts / objects with an integer `symbol` (or `digit`) and `box`. `active` is
    the map's "on" mask (default: nonzero).

    Works in numpy: a few small slices per digit, microseconds each, so 10,000 test
    images align in seconds."""
    if motif_map.ndim != 3:
        raise ValueError(f"expected a (C, H, W) map, got shape {tuple(motif_map.shape)}")
    values = np.asarray(motif_map.detach().float().cpu() if torch.is_tensor(motif_map)
                        else motif_map, dtype=np.float32)
    if active is None:
        on = values != 0
    else:
        on = np.asarray(active.cpu() if torch.is_tensor(active) else active, dtype=bool)
    values = np.where(on, values, np.float32(0))
    remaining = on.copy()
    n_active = int(on.sum())
    _, height, width = values.shape
    matches = []
    for motif in motifs:
        digit, (r0, c0, r1, c1) = _motif_fields(motif)
        r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, height), min(c1, width)
        window = remaining[:, r0:r1, c0:c1]
        if r1 <= r0 or c1 <= c0 or not window.any():
            matches.append(MotifMatch(digit, (r0, c0, r1, c1), None, 0.0))
            continue
        box_values = np.where(window, values[:, r0:r1, c0:c1], np.float32(-1))
        ch, dr, dc = np.unravel_index(int(box_values.argmax()), box_values.shape)
        matches.append(MotifMatch(digit, (r0, c0, r1, c1), int(ch),
                                  float(box_values[ch, dr, dc]), r0 + int(dr), c0 + int(dc)))
        remaining[:, r0:r1, c0:c1] = False
    fp = np.argwhere(remaining)  # (K, 3) channel, row, col in C order
    return ImageAlignment(matches, torch.from_numpy(fp.astype(np.int64)),
                          torch.from_numpy(values[remaining]), n_active)


def channel_assignment(confusion: np.ndarray, kind: str = "one-to-one") -> dict[int, int]:
    """Channel -> symbol map from confusion (symbols, channels) counts over matched boxes.

    one-to-one: the assignment maximising matches (Hungarian; each symbol at most one
    channel). many-to-one: each channel to the symbol it most often lands on (majority vote,
    ties to the lowest symbol); channels that never landed in a box are left out."""
    confusion = np.asarray(confusion)
    if kind == "one-to-one":
        rows, cols = linear_sum_assignment(confusion, maximize=True)
        return {int(c): int(r) for r, c in zip(rows, cols, strict=True)}
    if kind == "many-to-one":
        return {int(c): int(confusion[:, c].argmax()) for c in range(confusion.shape[1])
                if confusion[:, c].sum() > 0}
    raise ValueError(f"assignment must be one of {ASSIGNMENTS}, got {kind!r}")


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def sequence_error(predicted: Sequence[int], true: Sequence[int]) -> float:
    """Normalised edit distance: edit(p, t) / max(len p, len t) (0 when both are empty)."""
    longest = max(len(predicted), len(true))
    return edit_distance(predicted, true) / longest if longest else 0.0


@dataclass
class MotifStats:
    """Accumulates alignments and decoded sequences over a test set, then reports."""

    digits: int = 10  # the number of motif symbols (rows of the confusion table)
    channels: int = 10
    assignment: str = "one-to-one"  # how CE maps channels to symbols (ASSIGNMENTS)
    confusion: np.ndarray = field(default=None)  # (symbols, channels) counts, matched boxes
    total_digits: int = 0
    missed: int = 0
    false_positives: int = 0
    active: int = 0
    values: int = 0  # map entries seen (N * C * H * W)
    images: int = 0
    sequence_error_sum: float = 0.0
    exact: int = 0
    sequences: int = 0

    missed_by_symbol: np.ndarray = field(default=None)  # (symbols,) boxes nothing fired in

    def __post_init__(self):
        if self.missed_by_symbol is None:
            self.missed_by_symbol = np.zeros(self.digits, dtype=np.int64)
        if self.assignment not in ASSIGNMENTS:
            raise ValueError(f"assignment must be one of {ASSIGNMENTS}, got {self.assignment!r}")
        if self.confusion is None:
            self.confusion = np.zeros((self.digits, self.channels), dtype=np.int64)

    def add_alignment(self, alignment: ImageAlignment, map_size: int) -> None:
        for m in alignment.matches:
            self.total_digits += 1
            if m.channel is None:
                self.missed += 1
                self.missed_by_symbol[m.symbol] += 1
            else:
                self.confusion[m.symbol, m.channel] += 1
        self.false_positives += len(alignment.false_positive_values)
        self.active += alignment.active
        self.values += map_size
        self.images += 1

    def add_sequence(self, predicted: Sequence[int], true: Sequence[int]) -> None:
        self.sequence_error_sum += sequence_error(predicted, true)
        self.exact += list(predicted) == list(true)
        self.sequences += 1

    def report(self) -> dict:
        """FPE, FNE, CE, E2EE in percent; densities as fractions."""
        predicted = int(self.confusion.sum())
        assignment = channel_assignment(self.confusion, self.assignment)
        on_assignment = sum(int(self.confusion[d, c]) for c, d in assignment.items())
        density = self.active / self.values if self.values else float("nan")
        min_density = self.total_digits / self.values if self.values else float("nan")
        pct = lambda a, b: 100.0 * a / b if b else float("nan")  # noqa: E731
        return {
            "n": self.images,
            "fpe": pct(self.false_positives, predicted + self.false_positives),
            "fne": pct(self.missed, self.total_digits),
            "ce": pct(predicted - on_assignment, predicted),
            "e2ee": pct(self.sequence_error_sum, self.sequences),
            "exact_match_accuracy": pct(self.exact, self.sequences),
            "density": density,
            "min_density": min_density,
            "density_ratio": density / min_density if min_density else float("nan"),
            "digits": self.total_digits,
            "missed": self.missed,
            "false_positive_pixels": self.false_positives,
            "confusion": self.confusion.tolist(),  # rows: true symbol, columns: channel
            "missed_by_symbol": self.missed_by_symbol.tolist(),
            "assignment_kind": self.assignment,
            # channel -> symbol index ("channel_to_digit": the name before the Domain seam)
            "assignment": {str(c): d for c, d in sorted(assignment.items())},
            "channel_to_digit": {str(c): d for c, d in sorted(assignment.items())},
        }
