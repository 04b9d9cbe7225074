"""Use Sparling from Python: load a checkpoint, run images, align with ground truth,
intervene, evaluate, train from a config file.

Thin, typed wrappers over `analysis.inspect`, `analysis.evaluate`, `training.loop` and
`checkpoint` (which hold the logic). Every function takes a loaded `Checkpoint` or a bare
`SparlingModel`; images are numpy arrays or torch tensors of ink values in [0, 1] (1 = ink),
of the model's size (or give `fit="pad"` / `fit="resize"`).

    from sparling_core import get_domain, load_checkpoint, run

    checkpoint = load_checkpoint("checkpoints/digit-circle-mt")
    sample = get_domain("digit-circle").sample(7)
    result = run(checkpoint, sample.image)
    result.tokens, result.activations.channel, result.activations.records()
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import torch

from .analysis import inspect as _inspect
from .analysis.evaluate import evaluate as _evaluate
from .checkpoint import Checkpoint, load_checkpoint
from .domains import Domain, Motif, Sample, get_domain
from .models.sparling import SparlingModel
from .training.loop import TrainConfig, build_train_config, read_config_file
from .training.loop import train as _train

__all__ = [
    "ModelLike",
    "ImageLike",
    "Fit",
    "SparseActivations",
    "Decoding",
    "RunResult",
    "MotifMatch",
    "Alignment",
    "Intervention",
    "as_model",
    "model_assignment",
    "run",
    "run_batch",
    "align",
    "intervene",
    "evaluate",
    "load_train_config",
    "train_from_config",
]

ModelLike: TypeAlias = Checkpoint | SparlingModel
"""A loaded checkpoint (`load_checkpoint`) or a bare model."""
ImageLike: TypeAlias = np.ndarray | torch.Tensor | Sequence[Sequence[float]]
"""One image (H, W) of ink values in [0, 1]: numpy, torch or nested lists."""
Fit = Literal["none", "pad", "resize"]
"""How an image of another size is brought to the model's: none (an error), pad (pad or
crop centrally), resize (nearest neighbour)."""


def as_model(model: ModelLike) -> SparlingModel:
    """The `SparlingModel` of a checkpoint (or the model itself), checked to be in eval
    mode (training mode would move thresholds and BatchNorm statistics)."""
    m = model.model if isinstance(model, Checkpoint) else model
    if not isinstance(m, SparlingModel):
        raise TypeError(f"expected a Checkpoint or a SparlingModel, got {type(model).__name__}")
    if m.training:
        raise ValueError("the model is in training mode; call model.eval() first")
    return m


def model_assignment(model: ModelLike) -> dict[int, int] | None:
    """The evaluated channel -> symbol index map from a checkpoint's metrics.json (None for a
    bare model or a checkpoint that was never evaluated)."""
    if not isinstance(model, Checkpoint):
        return None
    metrics = model.metrics or {}
    mapping = metrics.get("assignment", metrics.get("channel_to_digit"))
    symbols = get_domain(model.config.domain).symbols
    return _inspect.parse_assignment(mapping, model.config.motif_channels, len(symbols))


# --- results ---------------------------------------------------------------------------------

def _same_array(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None and b is None) or (
        a is not None and b is not None and np.array_equal(a, b))


@dataclass(frozen=True, eq=False)
class SparseActivations:
    """The "on" entries of one sparse motif map (C, H, W) as COO arrays, in channel, row,
    column order: `channel`, `row`, `col` (int64) and `value` (float32), all of length K."""

    channel: np.ndarray
    row: np.ndarray
    col: np.ndarray
    value: np.ndarray
    shape: tuple[int, int, int]  # (C, H, W) of the map

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]],
                     shape: Sequence[int]) -> SparseActivations:
        """From [{"channel", "row", "col", "value"}, ...] (as the REST API returns them)."""
        rows = list(records)
        return cls(np.array([r["channel"] for r in rows], dtype=np.int64),
                   np.array([r["row"] for r in rows], dtype=np.int64),
                   np.array([r["col"] for r in rows], dtype=np.int64),
                   np.array([r["value"] for r in rows], dtype=np.float32),
                   tuple(int(s) for s in shape))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return int(self.channel.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparseActivations):
            return NotImplemented
        return self.shape == other.shape and all(
            _same_array(getattr(self, f), getattr(other, f))
            for f in ("channel", "row", "col", "value"))

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside

    def records(self) -> list[dict[str, Any]]:
        """[{"channel", "row", "col", "value"}, ...] with Python ints and floats (JSON-able;
        the form `intervene(remove=...)` takes)."""
        return [{"channel": int(c), "row": int(r), "col": int(k), "value": float(v)}
                for c, r, k, v in zip(self.channel, self.row, self.col, self.value, strict=True)]

    def select(self, channel: int | Sequence[int]) -> SparseActivations:
        """Only the entries of the given channel(s)."""
        keep = np.isin(self.channel, np.atleast_1d(np.asarray(channel)))
        return SparseActivations(self.channel[keep], self.row[keep], self.col[keep],
                                 self.value[keep], self.shape)

    def to_dense(self) -> np.ndarray:
        """The (C, H, W) float32 map with zeros where nothing is on."""
        out = np.zeros(self.shape, dtype=np.float32)
        out[self.channel, self.row, self.col] = self.value
        return out


@dataclass(frozen=True)
class Decoding:
    """A decoded answer: token ids, their tokens, and each emitted token's probability (the
    end token's included, so `len(probabilities) == len(tokens) + 1` unless the answer ran
    to the maximum length)."""

    sequence: list[int]
    tokens: list[str]
    probabilities: list[float]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Decoding:
        """From {"sequence", "tokens", "probabilities"} (as `analysis.inspect` returns it)."""
        return cls(list(d["sequence"]), list(d["tokens"]), list(d["probabilities"]))


@dataclass(frozen=True, eq=False)
class RunResult:
    """One image through the model: its sparse activations, the decoded output, how many
    entries are on and the density (on / (C * H * W)); `dense` is the whole (C, H, W) map
    when asked for."""

    activations: SparseActivations
    output: Decoding
    n_active: int
    density: float
    dense: np.ndarray | None = None

    @property
    def tokens(self) -> list[str]:
        return self.output.tokens

    @property
    def probabilities(self) -> list[float]:
        return self.output.probabilities

    def records(self) -> list[dict[str, Any]]:
        """The activations as [{"channel", "row", "col", "value"}, ...]."""
        return self.activations.records()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunResult):
            return NotImplemented
        return ((self.activations, self.output, self.n_active, self.density)
                == (other.activations, other.output, other.n_active, other.density)
                and _same_array(self.dense, other.dense))

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class MotifMatch:
    """One ground-truth motif: hit (a channel assigned to its symbol fired in its box),
    confused (another symbol's channel fired there) or missed; `box` as evaluated (padded by
    the domain's box padding), `channel` / `value` / `row` / `col` of the strongest
    activation in it (None when missed)."""

    symbol: str
    box: tuple[int, int, int, int]
    status: Literal["hit", "confused", "missed"]
    channel: int | None
    value: float
    row: int | None
    col: int | None


@dataclass(frozen=True)
class Alignment:
    """One image against its ground truth: the decoded output, every motif's match, the
    activations outside every box (false positives), the channel -> symbol assignment used,
    and the per-image FPE / FNE / CE in percent (None where undefined)."""

    output: Decoding
    label: list[str] | None
    motifs: list[MotifMatch]
    false_positives: SparseActivations
    assignment: dict[int, str]
    fpe: float | None
    fne: float | None
    ce: float | None
    n_active: int
    density: float

    @property
    def hits(self) -> list[MotifMatch]:
        return [m for m in self.motifs if m.status == "hit"]

    @property
    def missed(self) -> list[MotifMatch]:
        return [m for m in self.motifs if m.status == "missed"]

    @property
    def confused(self) -> list[MotifMatch]:
        return [m for m in self.motifs if m.status == "confused"]


@dataclass(frozen=True)
class Intervention:
    """The decoding before and after an edit of the sparse map, how many removals hit an
    entry that was on, how many entries were added, and the activations after the edit."""

    before: Decoding
    after: Decoding
    removed: int
    added: int
    activations_after: SparseActivations = field(repr=False)

    @property
    def changed(self) -> bool:
        return self.before.sequence != self.after.sequence


# --- images ----------------------------------------------------------------------------------

def _numpy(image: Any) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        return image.detach().to("cpu", torch.float64).numpy()
    return np.asarray(image, dtype=np.float64)


def _prepare(model: SparlingModel, image: Any, fit: Fit) -> np.ndarray:
    array = _numpy(image.image if isinstance(image, Sample) else image)
    if array.ndim == 3 and array.shape[0] == 1:  # (1, H, W): one channel
        array = array[0]
    return _inspect.prepare_image(array, model.config.image_shape, fit)


def _prepare_batch(model: SparlingModel, images: Any, fit: Fit) -> list[np.ndarray]:
    if isinstance(images, (np.ndarray, torch.Tensor)):
        array = _numpy(images)
        if array.ndim == 4 and array.shape[1] == 1:  # (N, 1, H, W)
            array = array[:, 0]
        if array.ndim == 2:
            raise ValueError("run_batch takes (N, H, W) or (N, 1, H, W) images or a list of "
                             "images; use run for one (H, W) image")
        if array.ndim != 3:
            raise ValueError(f"expected (N, H, W) or (N, 1, H, W) images, got shape "
                             f"{array.shape}")
        images = list(array)
    return [_prepare(model, image, fit) for image in images]


def _run_result(r: Mapping[str, Any], dense: bool) -> RunResult:
    shape = (r["channels"], r["height"], r["width"])
    return RunResult(
        activations=SparseActivations.from_records(r["activations"], shape),
        output=Decoding.from_dict(r),
        n_active=int(r["n_active"]),
        density=float(r["density"]),
        dense=np.asarray(r["dense"], dtype=np.float32) if dense else None,
    )


# --- the functions ---------------------------------------------------------------------------

def run(model: ModelLike, image: ImageLike | Sample, *, fit: Fit = "none",
        dense: bool = False) -> RunResult:
    """Run one image (H, W) (or (1, H, W), or a domain `Sample`): its sparse activations and
    decoded output; the whole (C, H, W) map as `dense` when asked."""
    m = as_model(model)
    return run_batch(m, [_prepare(m, image, fit)], dense=dense)[0]


def run_batch(model: ModelLike,
              images: np.ndarray | torch.Tensor | Sequence[ImageLike | Sample], *,
              fit: Fit = "none", dense: bool = False, batch_size: int = 64
              ) -> list[RunResult]:
    """Run a batch: (N, H, W) or (N, 1, H, W) arrays / tensors, or a list of images or
    samples; one `RunResult` per image, `batch_size` images per forward pass."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    m = as_model(model)
    prepared = _prepare_batch(m, images, fit)
    results: list[RunResult] = []
    for start in range(0, len(prepared), batch_size):
        chunk = np.stack(prepared[start:start + batch_size])
        results += [_run_result(r, dense) for r in _inspect.run_images(m, chunk, dense)]
    return results


def align(model: ModelLike, sample: Sample | ImageLike,
          motifs: Sequence[Motif | Mapping[str, Any]] | None = None, *,
          label: Sequence[str] | None = None,
          assignment: Mapping[int, int] | None = None, fit: Fit = "none") -> Alignment:
    """Align one image's activations with its ground-truth motifs: a domain `Sample` (its
    image, motifs and label), or an image with `motifs` (`Motif`s or dicts with `symbol` and
    `box`). The channel -> symbol `assignment` defaults to the checkpoint's evaluated one,
    else the one that best fits this image."""
    m = as_model(model)
    if isinstance(sample, Sample):
        image = sample.image
        motifs = sample.motifs if motifs is None else motifs
        label = sample.label if label is None else label
    else:
        image = sample
        if motifs is None:
            raise ValueError("give the image's motifs (or pass a domain Sample)")
    if assignment is None:
        assignment = model_assignment(model)
    d = _inspect.analyze(m, _prepare(m, image, fit), motifs, assignment, label)
    c, h, w = m.config.motif_channels, *m.config.image_shape
    return Alignment(
        output=Decoding.from_dict(d),
        label=d["label"],
        motifs=[MotifMatch(x["symbol"], tuple(x["box"]), x["status"], x["channel"],  # type: ignore[arg-type]
                           float(x["value"]), x["row"], x["col"]) for x in d["motifs"]],
        false_positives=SparseActivations.from_records(d["false_positives"], (c, h, w)),
        assignment={int(k): v for k, v in d["assignment"].items()},
        fpe=d["fpe"], fne=d["fne"], ce=d["ce"], n_active=int(d["n_active"]),
        density=float(d["density"]),
    )


Edit: TypeAlias = Mapping[str, Any] | Sequence[float]


def _edits(edits: SparseActivations | Iterable[Edit], with_value: bool) -> list[dict]:
    if isinstance(edits, SparseActivations):
        return edits.records()
    out = []
    for e in edits:
        if isinstance(e, Mapping):
            out.append(dict(e))
            continue
        e = list(e)
        if len(e) not in ((4,) if with_value else (3, 4)):
            raise ValueError(f"an edit is (channel, row, col{', value' if with_value else ''}),"
                             f" got {tuple(e)}")
        d = {"channel": int(e[0]), "row": int(e[1]), "col": int(e[2])}
        if with_value:
            d["value"] = float(e[3])
        out.append(d)
    return out


def intervene(model: ModelLike, image: ImageLike | Sample, *,
              remove: SparseActivations | Iterable[Edit] = (),
              add: SparseActivations | Iterable[Edit] = (), fit: Fit = "none"
              ) -> Intervention:
    """Edit one image's sparse map and decode it again: `remove` zeroes entries, then `add`
    sets entries (value > 0). Entries are dicts {"channel", "row", "col"[, "value"]},
    tuples (channel, row, col[, value]) or a `SparseActivations` (e.g.
    `run(...).activations.select(3)`)."""
    m = as_model(model)
    if isinstance(image, Sample):
        image = image.image
    d = _inspect.intervene(m, _prepare(m, image, fit), _edits(remove, False),
                           _edits(add, True))
    c, h, w = m.config.motif_channels, *m.config.image_shape
    return Intervention(
        before=Decoding.from_dict(d["before"]), after=Decoding.from_dict(d["after"]),
        removed=int(d["removed"]), added=int(d["added"]),
        activations_after=SparseActivations.from_records(d["activations_after"], (c, h, w)),
    )


def evaluate(model: ModelLike, n: int = 10_000, first_seed: int | None = None,
             batch_size: int = 100, progress: bool = False, domain: Domain | None = None,
             split: str = "test") -> dict:
    """FPE, FNE, CE, E2EE (percent), realised density and its ratio to the minimum, the
    confusion table and the channel -> symbol assignment on `n` images of the model's
    domain (default: the start of its test split). See `analysis.evaluate.evaluate`."""
    m = model.model if isinstance(model, Checkpoint) else model
    return _evaluate(m, n=n, first_seed=first_seed, batch_size=batch_size,
                                     progress=progress, domain=domain, split=split)


def load_train_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """A training config from a JSON file (as `sparling train --config` reads it: the
    domain fixes the vocabulary, label length and image shape), with top-level settings
    replaced by `overrides` (e.g. out="runs/x", max_samples=64, val_every=32). Raises
    ValueError naming the problem."""
    data = read_config_file(path)
    model_overrides = overrides.pop("model", None) or {}
    if model_overrides:
        data["model"] = {**data.get("model", {}), **model_overrides}
    data.update({k: (str(v) if isinstance(v, Path) else v) for k, v in overrides.items()})
    return build_train_config(data)


def train_from_config(path: str | Path, *, resume: bool = False, progress: bool = False,
                      **overrides: Any) -> Checkpoint:
    """Train from a JSON config file (`load_train_config(path, **overrides)`) and return
    the saved checkpoint, loaded (in eval mode). `resume=True` continues from the `out`
    folder's saved state."""
    folder = _train(load_train_config(path, **overrides), resume=resume, progress=progress)
    return load_checkpoint(folder)
