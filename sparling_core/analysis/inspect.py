"""Inspect a trained model: activations, per-image motif analysis, interventions, channel
summaries. Pure library code for the service (knows nothing of HTTP); every function runs the
model in eval mode under `torch.inference_mode`, so thresholds and BatchNorm statistics are
never touched.

Images are 2-D numpy arrays of ink values in [0, 1] (1 = ink), (H, W) = the model's size;
`prepare_image` brings other sizes there. Maps are the sparse motif map (C, H, W); an
activation is "on" where `model.bottleneck.active` says so (nonzero for MT / ST / TopK).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from ..domains import Domain, Sample, get_domain
from ..models.sparling import SparlingModel
from .evaluate import motif_boxes
from .metrics import align_image, channel_assignment

__all__ = [
    "FITS",
    "prepare_image",
    "sparse_activations",
    "run_images",
    "empty_decode",
    "run_image",
    "analyze",
    "intervene",
    "channel_summaries",
    "parse_channel_to_digit",
    "parse_assignment",
    "model_domain",
]

T = TypeVar("T")
# runs one forward or decode of a summary: run(fn, *args) -> fn(*args), somewhere
Runner = Callable[..., Any]

FITS = ("none", "pad", "resize")


def _check_eval(model: SparlingModel) -> None:
    if model.training:
        raise ValueError("the model is in training mode; call model.eval() before inspecting "
                         "it (training mode would move thresholds and BatchNorm statistics)")


def model_domain(model: SparlingModel) -> Domain:
    """The domain a model was trained on (its config names it)."""
    return get_domain(model.config.domain)


def prepare_image(array, size: int | tuple[int, int] | list[int], fit: str = "none"
                  ) -> np.ndarray:
    """A 2-D array of ink values in [0, 1] -> (H, W) float32, `size` = H = W or (H, W).

    fit="none": the shape must already be (H, W); "pad": pad with zeros / crop, centred;
    "resize": nearest-neighbour resize. Raises ValueError naming the problem."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    try:
        image = np.asarray(array)
        if image.dtype not in (np.float32, np.float64):  # float32 is checked as it is
            image = np.asarray(array, dtype=np.float64)  # checked before narrowing to float32
    except (ValueError, TypeError) as e:  # ragged rows, strings
        raise ValueError(f"the image must be a rectangular 2-D array of numbers ({e})") from e
    if image.ndim != 2:
        raise ValueError(f"the image must be 2-D (rows of numbers), got {image.ndim} dimensions")
    if image.size == 0:
        raise ValueError("the image is empty")
    if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
        raise ValueError("image values must be finite numbers in [0, 1] (1 = ink)")
    image = image.astype(np.float32, copy=False)
    th, tw = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    h, w = image.shape
    if (h, w) == (th, tw):
        return image.copy() if image is array else image  # never the caller's own array
    if fit == "none":
        raise ValueError(f"expected a {th}x{tw} image, got {h}x{w} (rows x columns); "
                         "send fit=pad or fit=resize to adapt it")
    if fit == "resize":
        rows = np.minimum((np.arange(th) + 0.5) * h / th, h - 1).astype(np.int64)
        cols = np.minimum((np.arange(tw) + 0.5) * w / tw, w - 1).astype(np.int64)
        return image[rows[:, None], cols[None, :]]  # (th, tw) directly: no (th, w) step
    out = np.zeros((th, tw), dtype=np.float32)  # "pad": centre, cropping what overhangs
    src_r, dst_r, n_r = _centred(h, th)
    src_c, dst_c, n_c = _centred(w, tw)
    out[dst_r : dst_r + n_r, dst_c : dst_c + n_c] = image[src_r : src_r + n_r, src_c : src_c + n_c]
    return out


def _centred(length: int, size: int) -> tuple[int, int, int]:
    """(source start, destination start, count) placing `length` centrally in `size`."""
    if length <= size:
        return 0, (size - length) // 2, length
    return (length - size) // 2, 0, size


def sparse_activations(motif_map: torch.Tensor, active: torch.Tensor | None = None,
                       ) -> list[dict]:
    """The "on" entries of one map (C, H, W) as [{"channel", "row", "col", "value"}], in
    channel, row, column order. `active` defaults to nonzero."""
    if motif_map.dim() != 3:
        raise ValueError(f"expected a (C, H, W) map, got shape {tuple(motif_map.shape)}")
    on = (motif_map != 0) if active is None else active
    where = on.nonzero()  # (K, 3)
    values = motif_map[on].float().tolist()
    return [{"channel": c, "row": r, "col": col, "value": v}
            for (c, r, col), v in zip(where.tolist(), values, strict=True)]


def _to_tensor(model: SparlingModel, images: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
    h, w = model.config.image_shape
    batch = np.asarray(images, dtype=np.float32)
    if batch.ndim == 2:
        batch = batch[None]
    if batch.ndim != 3 or batch.shape[1:] != (h, w):
        raise ValueError(f"expected {h}x{w} images, got shape {batch.shape}; "
                         "use prepare_image first")
    device = next(model.parameters()).device
    return torch.from_numpy(np.ascontiguousarray(batch))[:, None].to(device)  # (N, 1, H, W)


def _tokens(model: SparlingModel, ids: Sequence[int]) -> list[str]:
    return model_domain(model).tokens(ids)


def decode_warnings(n_active: int, tokens: Sequence[str], empty_tokens: Sequence[str],
                    ink_fraction: float, ink_range: tuple[float, float, float] | None
                    ) -> list[str]:
    """Why a decode may not be supported by the motifs it was read from: an empty or
    nearly empty map, more output tokens than active motifs, an answer equal to what the
    decoder says for an empty map, or an input whose ink fraction is far from the training
    images'."""
    warnings = []
    if n_active == 0:
        warnings.append("No motif is active: the decoded answer is the decoder's guess for an "
                        "empty map, not a reading of this image.")
    elif n_active < len(tokens):
        warnings.append(f"The decoder emitted {len(tokens)} tokens from {n_active} active "
                        f"motif{'s' if n_active != 1 else ''}: at least "
                        f"{len(tokens) - n_active} token(s) are not backed by a motif.")
    if n_active and list(tokens) == list(empty_tokens):
        warnings.append("The answer equals the decoder's answer for an empty map.")
    if ink_range is not None:
        low, mean, high = ink_range
        if ink_fraction > 0.5 and mean < 0.5:
            warnings.append(f"{ink_fraction:.0%} of the pixels are ink (training images: "
                            f"{low:.0%}-{high:.0%}): is the image inverted? Ink must be "
                            "bright (1) on a dark (0) background.")
        elif not 0.5 * low <= ink_fraction <= 1.5 * high:
            warnings.append(f"{ink_fraction:.1%} of the pixels are ink, far from the "
                            f"training images' {low:.1%}-{high:.1%}: the motifs may not mean "
                            "what they mean on training data.")
    return warnings


def _result(model: SparlingModel, motif_map: torch.Tensor, active: torch.Tensor,
            sequence: list[int], probabilities: list[float], dense: bool,
            image: torch.Tensor | None = None, empty: tuple[list[int], list[float]] | None = None
            ) -> dict:
    c, h, w = motif_map.shape
    n_active = int(active.sum())
    domain = model_domain(model)
    tokens = _tokens(model, sequence)
    extra = {}
    if image is not None and empty is not None:
        ink = float(image.float().mean())
        empty_tokens = domain.tokens(empty[0])
        try:
            ink_range = domain.ink_fraction_range()
        except Exception:  # noqa: BLE001 - a domain without readable training images
            ink_range = None
        extra = {
            "ink_fraction": ink,
            "empty_map": {"sequence": empty[0], "tokens": empty_tokens,
                          "probabilities": empty[1]},
            "warnings": decode_warnings(n_active, tokens, empty_tokens, ink, ink_range),
        }
    return {
        **extra,
        "tokens": tokens,
        "height": h,
        "width": w,
        "channels": c,
        "activations": sparse_activations(motif_map, active),
        "n_active": n_active,
        "density": n_active / motif_map.numel(),
        "sequence": list(sequence),
        "probabilities": list(probabilities),
        "dense": motif_map.float().tolist() if dense else None,
    }


# model -> (key, (sequence, probabilities)): the decoder's answer for an all-zero map
_EMPTY_DECODES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def empty_decode(model: SparlingModel, like: torch.Tensor) -> tuple[list[int], list[float]]:
    """The decoder's answer (sequence, per-token probabilities) for an all-zero map shaped
    like one map of `like` (N, C, H, W): the baseline every decode is compared with. It
    depends on the decoder's weights only, so it is computed once per model and kept while
    the decoder's weight tensors (identity, storage and version counter), the map's shape,
    dtype and device stay the same: `load_state_dict`, a new decoder, `p.data = ...` and an
    in-place update that autograd sees (torch's default Adam step) all recompute it. A
    fused optimizer step writes without bumping the version counter: after training with
    one in the same process, call `_EMPTY_DECODES.pop(model, None)`. Call under inference
    mode, with the model in eval mode. Returns fresh lists (a caller may change them)."""
    try:
        versions = tuple((id(p), p.data_ptr(), p._version) for p in model.decoder.parameters())
    except RuntimeError:  # weights made under inference mode keep no version: never cache
        versions = None
    key = (tuple(like.shape[1:]), like.dtype, like.device, versions)
    hit = _EMPTY_DECODES.get(model)
    if versions is None or hit is None or hit[0] != key:
        sequences, probabilities = model.decode_motifs(torch.zeros_like(like[:1]))
        hit = (key, (tuple(sequences[0]), tuple(probabilities[0])))
        if versions is not None:
            _EMPTY_DECODES[model] = hit
    return list(hit[1][0]), list(hit[1][1])


def run_images(model: SparlingModel, images: Sequence[np.ndarray] | np.ndarray,
               dense: bool | Sequence[bool] = False, batch_invariant: bool = False,
               motif_batch: int | None = None) -> list[dict]:
    """Run (N, H, W) images: per image its sparse activations, n_active, density, decoded
    sequence and per-token probabilities (end token included); the dense (C, H, W) map as
    nested lists when `dense` (one flag for all, or one per image). `batch_invariant`:
    decode each map as it decodes alone, bit for bit, whatever it is batched with
    (`SparlingModel.decode_motifs(..., batch_invariant=True)`; the service's request
    batcher relies on it); `motif_batch`: the motif maps this many images at a time (1 for
    models whose convolutions torch runs with another kernel for one image than for
    several; a few for cache-friendly convolutions)."""
    _check_eval(model)
    with torch.inference_mode():
        x = _to_tensor(model, images)
        flags = [dense] * x.shape[0] if isinstance(dense, bool) else list(dense)
        if len(flags) != x.shape[0]:
            raise ValueError(f"{len(flags)} dense flags for {x.shape[0]} images")
        step = motif_batch or x.shape[0]
        motifs = torch.cat([model.sparse_motifs(x[i:i + step])
                            for i in range(0, x.shape[0], step)])
        sequences, probabilities = model.decode_motifs(motifs, batch_invariant=batch_invariant)
        active = model.bottleneck.active(motifs)
        empty = empty_decode(model, motifs)
        return [_result(model, motifs[i], active[i], sequences[i], probabilities[i], flags[i],
                        x[i], empty)
                for i in range(motifs.shape[0])]


def run_image(model: SparlingModel, image: np.ndarray, dense: bool = False) -> dict:
    """`run_images` for one (H, W) image."""
    return run_images(model, np.asarray(image)[None], dense)[0]


def parse_assignment(mapping: Mapping | None, channels: int, symbols: int = 10
                     ) -> dict[int, int] | None:
    """metrics.json's {"channel": symbol index} -> {channel: symbol index}; None when absent
    or malformed. Several channels may share a symbol (many-to-one)."""
    if not isinstance(mapping, Mapping):
        return None
    try:
        parsed = {int(c): int(d) for c, d in mapping.items()}
    except (TypeError, ValueError):
        return None
    if any(not 0 <= c < channels or not 0 <= d < symbols for c, d in parsed.items()):
        return None
    return parsed


parse_channel_to_digit = parse_assignment  # the name before the Domain seam


def _percent(a: int, b: int) -> float | None:
    return 100.0 * a / b if b else None


def _generic_motifs(domain: Domain, motifs: Sequence) -> list[tuple[int, tuple]]:
    """Motifs as objects or dicts with `symbol` (a string of the domain's symbols; a legacy
    integer `digit` is read as its string) and `box` -> (symbol index, padded box)."""
    out = []
    for m in motifs:
        if isinstance(m, Mapping):
            symbol = m.get("symbol", m.get("digit"))
            box = m["box"]
        else:
            symbol = getattr(m, "symbol", None)
            symbol = getattr(m, "digit", None) if symbol is None else symbol
            box = m.box
        if symbol is None:
            raise ValueError("every motif needs a symbol")
        index = domain.symbol_index(str(symbol))
        box = tuple(int(v) for v in box)
        if len(box) != 4:
            raise ValueError(f"a motif box is [row0, col0, row1, col1], got {list(box)}")
        p = domain.box_padding
        out.append((index, (box[0] - p, box[1] - p, box[2] + p, box[3] + p)))
    return out


def analyze(model: SparlingModel, image: np.ndarray, motifs: Sequence,
            assignment: Mapping[int, int] | None = None,
            label: Sequence[str] | None = None) -> dict:
    """One image against its ground truth (SPEC 3): which motifs were hit (the fired channel
    is assigned to the motif's symbol), confused (another symbol's channel) or missed, the
    false-positive activations and the per-image FPE / FNE / CE in percent (None where
    undefined).

    `motifs`: objects or dicts with `symbol` and `box` (row0, col0, row1, col1),
    end-exclusive; boxes are padded by the domain's `box_padding` as in evaluation.
    `assignment`: the checkpoint's channel -> symbol index map; without one, the map that
    best fits this image alone (the domain's one-to-one or many-to-one rule)."""
    _check_eval(model)
    domain = model_domain(model)
    c = model.config.motif_channels
    pairs = _generic_motifs(domain, motifs)
    with torch.inference_mode():
        decoded = model.generate(_to_tensor(model, image))
        motif_map = decoded.motifs[0]  # (C, H, W)
        active = model.bottleneck.active(decoded.motifs)[0]
        alignment = align_image(motif_map, pairs, active)
    if assignment is None:
        confusion = np.zeros((len(domain.symbols), c), dtype=np.int64)
        for m in alignment.matches:
            if m.channel is not None:
                confusion[m.symbol, m.channel] += 1
        assignment = channel_assignment(confusion, domain.assignment_for(c))
    found = []
    for m, (_, box) in zip(alignment.matches, pairs, strict=True):
        if m.channel is None:
            status = "missed"
        elif assignment.get(m.channel) == m.symbol:
            status = "hit"
        else:
            status = "confused"
        found.append({"symbol": domain.symbols[m.symbol], "box": list(box), "status": status,
                      "channel": m.channel, "value": m.value, "row": m.row, "col": m.col})
    fp = [{"channel": ch, "row": r, "col": col, "value": v} for (ch, r, col), v in
          zip(alignment.false_positives.tolist(), alignment.false_positive_values.tolist(),
              strict=True)]
    predicted, hits = alignment.predicted, sum(d["status"] == "hit" for d in found)
    return {
        "sequence": decoded.sequences[0],
        "tokens": domain.tokens(decoded.sequences[0]),
        "probabilities": decoded.probabilities[0],
        "label": list(label) if label is not None else None,
        "motifs": found,
        "assignment": {str(ch): domain.symbols[d] for ch, d in sorted(assignment.items())},
        "false_positives": fp,
        "fpe": _percent(len(fp), predicted + len(fp)),
        "fne": _percent(alignment.missed, len(alignment.matches)),
        "ce": _percent(predicted - hits, predicted),
        "n_active": alignment.active,
        "density": alignment.active / motif_map.numel(),
    }


def _check_position(shape: tuple[int, int, int], channel: int, row: int, col: int,
                    what: str) -> None:
    c, h, w = shape
    if not (0 <= channel < c and 0 <= row < h and 0 <= col < w):
        raise ValueError(f"{what} (channel {channel}, row {row}, col {col}) is outside the "
                         f"map: channel must be in 0..{c - 1}, row in 0..{h - 1}, "
                         f"col in 0..{w - 1}")


def intervene(model: SparlingModel, image: np.ndarray, remove: Sequence[Mapping] = (),
              add: Sequence[Mapping] = ()) -> dict:
    """Edit the sparse map of one image and decode it again: `remove` zeroes entries
    ({"channel", "row", "col"}), then `add` sets entries ({"channel", "row", "col", "value"},
    value > 0). Returns the decoding before and after, how many removals hit a nonzero
    entry, how many entries were added, and the activations after the edit."""
    _check_eval(model)
    with torch.inference_mode():
        motifs = model.sparse_motifs(_to_tensor(model, image))  # (1, C, H, W)
        shape = tuple(motifs.shape[1:])
        for e in remove:
            _check_position(shape, int(e["channel"]), int(e["row"]), int(e["col"]), "remove")
        for e in add:
            _check_position(shape, int(e["channel"]), int(e["row"]), int(e["col"]), "add")
            value = float(e["value"])
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"added values must be finite and > 0, got {value}")
        before_seq, before_prob = model.decode_motifs(motifs)
        edited = motifs.clone()
        removed = 0
        for e in remove:
            idx = (0, int(e["channel"]), int(e["row"]), int(e["col"]))
            removed += bool(edited[idx] != 0)
            edited[idx] = 0
        for e in add:
            edited[0, int(e["channel"]), int(e["row"]), int(e["col"])] = float(e["value"])
        after_seq, after_prob = model.decode_motifs(edited)
        active = model.bottleneck.active(edited)[0]
        tokens = model_domain(model).tokens
        return {
            "before": {"sequence": before_seq[0], "tokens": tokens(before_seq[0]),
                       "probabilities": before_prob[0]},
            "after": {"sequence": after_seq[0], "tokens": tokens(after_seq[0]),
                      "probabilities": after_prob[0]},
            "removed": removed,
            "added": len(add),
            "activations_after": sparse_activations(edited[0], active),
        }


@dataclass
class _Batch:
    samples: list[Sample]
    maps: torch.Tensor  # (B, C, H, W)
    active: torch.Tensor  # (B, C, H, W) bool


def _direct(fn: Callable[..., T], *args) -> T:
    return fn(*args)


def _inference(fn: Callable[..., T]) -> Callable[..., T]:
    """fn under inference mode in whichever thread runs it (grad mode is per thread)."""
    def wrapped(*args):
        with torch.inference_mode():
            return fn(*args)
    return wrapped


def _summary_batches(model: SparlingModel, domain: Domain, n: int, first_seed: int,
                     batch_size: int, split: str, run: Runner = _direct) -> Iterator[_Batch]:
    for start in range(0, n, batch_size):
        samples = domain.samples(range(first_seed + start, first_seed + min(n, start + batch_size)),
                                 split)
        maps = run(_inference(model.sparse_motifs),
                   _to_tensor(model, np.stack([s.image for s in samples])))
        yield _Batch(samples, maps, model.bottleneck.active(maps))


def _crop(image: np.ndarray, row: int, col: int, size: int) -> tuple[list, list[int]]:
    h, w = image.shape
    r0, c0 = max(row - size // 2, 0), max(col - size // 2, 0)
    r1, c1 = min(row - size // 2 + size, h), min(col - size // 2 + size, w)
    return image[r0:r1, c0:c1].astype(float).tolist(), [r0, c0]


_Pick = tuple[float, int, int, int]  # value, seed, row, col of one activation


def _peaks(batch: _Batch, where: torch.Tensor) -> list[list[_Pick]]:
    """Per channel, each image's strongest "on" activation inside `where` (B, C, H, W)
    (broadcastable): [channel][one (value, seed, row, col) per image where there is one]."""
    b, c, _, w = batch.maps.shape
    values = torch.where(batch.active & where, batch.maps.float(), torch.tensor(-np.inf))
    peak, at = values.flatten(2).max(dim=2)  # (B, C)
    peak, at = peak.numpy(), at.numpy()
    picks: list[list[_Pick]] = [[] for _ in range(c)]
    for i, s in enumerate(batch.samples):
        for ch in range(c):
            if np.isfinite(peak[i, ch]):
                r, col = divmod(int(at[i, ch]), w)
                picks[ch].append((float(peak[i, ch]), s.seed, r, col))
    return picks


def _symbol_masks(domain: Domain, sample: Sample, h: int, w: int) -> dict[int, np.ndarray]:
    """Symbol index -> (H, W) mask of the union of that symbol's boxes in `sample`, padded
    as the evaluation pads them (`motif_boxes`) and clipped to the image."""
    masks: dict[int, np.ndarray] = {}
    for symbol, (r0, c0, r1, c1) in motif_boxes(domain, sample):
        mask = masks.setdefault(symbol, np.zeros((h, w), dtype=bool))
        mask[max(r0, 0):max(r1, 0), max(c0, 0):max(c1, 0)] = True
    return masks


def _decode_invariant(model: SparlingModel, motifs: torch.Tensor
                      ) -> tuple[list[list[int]], list[list[float]]]:
    return model.decode_motifs(motifs, batch_invariant=True)


def _decode_changes(model: SparlingModel, batch: _Batch, run: Runner = _direct) -> np.ndarray:
    """Per channel, how many of the batch's images decode to another sequence once the
    channel is removed from their sparse map (zeroed). Images where the channel is not on
    keep their map and so their decode; only the others are decoded again. Decoding is
    batch-invariant, so a map decodes the same whichever maps it is decoded with."""
    c = batch.maps.shape[1]
    changed = np.zeros(c, dtype=np.int64)
    fires = batch.active.flatten(2).any(dim=2)  # (B, C)
    decode = _inference(_decode_invariant)
    before, _ = run(decode, model, batch.maps)
    for ch in range(c):
        rows = fires[:, ch].nonzero()[:, 0]
        if not len(rows):
            continue
        edited = batch.maps[rows].clone()
        edited[:, ch] = 0
        after, _ = run(decode, model, edited)
        changed[ch] = sum(a != before[i] for a, i in zip(after, rows.tolist(), strict=True))
    return changed


@dataclass
class _Records:
    """Every "on" activation of the images seen: parallel arrays."""
    channel: np.ndarray
    seed: np.ndarray
    row: np.ndarray
    col: np.ndarray
    value: np.ndarray

    @classmethod
    def of(cls, batch: _Batch) -> _Records:
        where = batch.active.nonzero().numpy()  # (K, 4): image, channel, row, col
        seeds = np.array([s.seed for s in batch.samples], dtype=np.int64)
        return cls(where[:, 1], seeds[where[:, 0]], where[:, 2], where[:, 3],
                   batch.maps[batch.active].float().numpy())

    @classmethod
    def join(cls, parts: Sequence[_Records]) -> _Records:
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return cls(empty, empty, empty, empty, np.zeros(0, dtype=np.float32))
        return cls(*(np.concatenate([getattr(p, k) for p in parts])
                     for k in ("channel", "seed", "row", "col", "value")))

    def __len__(self) -> int:
        return len(self.value)

    def of_channel(self, ch: int) -> _Records:
        keep = self.channel == ch
        return _Records(self.channel[keep], self.seed[keep], self.row[keep], self.col[keep],
                        self.value[keep])

    def nearest(self, target: float, k: int) -> list[_Pick]:
        """Up to k activations with values nearest `target`, one per image (nearest first;
        ties to the lower seed, row, column)."""
        order = np.lexsort((self.col, self.row, self.seed, np.abs(self.value - target)))
        picks: list[_Pick] = []
        seen: set[int] = set()
        for i in order:
            if len(picks) == k:
                break
            if int(self.seed[i]) not in seen:
                seen.add(int(self.seed[i]))
                picks.append((float(self.value[i]), int(self.seed[i]), int(self.row[i]),
                              int(self.col[i])))
        return picks


def _strongest(picks: list[_Pick], k: int) -> list[_Pick]:
    return sorted(picks, key=lambda t: (-t[0], t[1]))[:k]


def channel_summaries(model: SparlingModel, n: int = 500,
                      first_seed: int | None = None,
                      assignment: Mapping[int, int] | None = None, *, bins: int = 20,
                      top_k: int = 12, middle_k: int = 8, outside_k: int = 8, crop: int = 20,
                      batch_size: int = 50, max_values: int = 4_000_000, split: str = "val",
                      progress: Callable[[int, int], None] | None = None,
                      run: Runner | None = None) -> list[dict]:
    """Per channel over the model's domain's images first_seed .. first_seed + n - 1 of
    `split` (default: its first n validation images):

    - `symbol`: its symbol (`assignment`, channel -> symbol index, else the domain's
      assignment that best fits these images), `density`, a `histogram` of its "on" values
      and their `median` (None when it never fires);
    - `top_crops`: the `top_k` images where it fires hardest (one crop per image, `crop` x
      `crop` pixels around its strongest activation, clipped to the image);
    - `middle_crops`: the `middle_k` images with an activation nearest the median (one per
      image, nearest first);
    - `outside_crops`: the `outside_k` images where it fires hardest outside every
      ground-truth box (boxes padded as the evaluation pads them);
    - `precision`: the fraction of its activations inside a (padded) box of its own symbol;
      None when it is unassigned or never fires;
    - `effect`: {"changed", "n"}: on how many of the n images the decoded sequence changes
      when the channel is removed from the sparse map (zeroed).

    Every crop is {"seed", "row", "col", "value", "crop", "crop_origin"}. The histogram is
    exact; when more than `max_values` values are on (a dense model), it is counted in a
    second pass instead of holding them all, and the median and middle crops come from the
    activations held until then. `progress(done, n)` is called after each batch of images
    (it may raise to stop the work). `run(fn, *args)` runs each forward and decode (default:
    in this thread); a service passes one that runs it on its model's compute thread under
    the model's lock, so that other requests are answered between batches and all of a
    model's torch work stays on one thread."""
    _check_eval(model)
    if n < 1:
        raise ValueError("n must be >= 1")
    run = _direct if run is None else run
    domain = model_domain(model)
    first_seed = domain.first_seed(split) if first_seed is None else first_seed
    c = model.config.motif_channels
    s_count = len(domain.symbols)
    counts = np.zeros(c, dtype=np.int64)
    inside = np.zeros((c, max(s_count, 1)), dtype=np.int64)  # activations in a symbol's box
    changed = np.zeros(c, dtype=np.int64)
    lo, hi = np.full(c, np.inf), np.full(c, -np.inf)
    held: list[_Records] = []
    complete = True  # every activation is held (else the histogram takes a second pass)
    best: list[list[_Pick]] = [[] for _ in range(c)]
    outside: list[list[_Pick]] = [[] for _ in range(c)]
    confusion = np.zeros((s_count, c), dtype=np.int64)
    total, stored, done = 0, 0, 0
    with torch.inference_mode():
        for batch in _summary_batches(model, domain, n, first_seed, batch_size, split, run):
            b, _, h, w = batch.maps.shape
            total += b * h * w
            counts += batch.active.sum(dim=(0, 2, 3)).numpy()
            records = _Records.of(batch)
            for ch in np.unique(records.channel):
                v = records.value[records.channel == ch]
                lo[ch], hi[ch] = min(lo[ch], v.min()), max(hi[ch], v.max())
            if complete and stored + len(records) <= max_values:
                held.append(records)
                stored += len(records)
            else:
                complete = False  # too many to hold: histogram in a second pass
            masks = [_symbol_masks(domain, s, h, w) for s in batch.samples]
            out_mask = torch.ones((b, 1, h, w), dtype=torch.bool)
            for i, per_symbol in enumerate(masks):
                for symbol, mask in per_symbol.items():
                    m = torch.from_numpy(mask)
                    inside[:, symbol] += (batch.active[i] & m).sum(dim=(1, 2)).numpy()
                    out_mask[i, 0] &= ~m
            for ch, picks in enumerate(_peaks(batch, torch.tensor(True))):
                best[ch] += picks
            for ch, picks in enumerate(_peaks(batch, out_mask)):
                outside[ch] += picks
            if assignment is None:
                for i, s in enumerate(batch.samples):
                    pairs = motif_boxes(domain, s)
                    for m in align_image(batch.maps[i], pairs, batch.active[i]).matches:
                        if m.channel is not None:
                            confusion[m.symbol, m.channel] += 1
            changed += _decode_changes(model, batch, run)
            done += b
            if progress is not None:
                progress(done, n)
        ranges = [(float(lo[ch]), float(hi[ch])) if counts[ch] else (0.0, 1.0)
                  for ch in range(c)]
        hist = np.zeros((c, bins), dtype=np.int64)
        records = _Records.join(held)
        if complete:
            for ch in range(c):
                v = records.value[records.channel == ch]
                if v.size:
                    hist[ch] = np.histogram(v, bins, ranges[ch])[0]
        else:
            for batch in _summary_batches(model, domain, n, first_seed, batch_size, split,
                                          run):
                for ch in range(c):
                    v = batch.maps[:, ch][batch.active[:, ch]].float().numpy()
                    hist[ch] += np.histogram(v, bins, ranges[ch])[0]
    assignment = (dict(assignment) if assignment is not None
                  else channel_assignment(confusion, domain.assignment_for(c)))
    images: dict[int, np.ndarray] = {}

    def crops(picks: list[_Pick]) -> list[dict]:
        out = []
        for value, seed, r, col in picks:
            if seed not in images:
                images[seed] = np.asarray(domain.sample(seed, split).image)
            pixels, origin = _crop(images[seed], r, col, crop)
            out.append({"seed": seed, "row": r, "col": col, "value": value, "crop": pixels,
                        "crop_origin": origin})
        return out

    summaries = []
    for ch in range(c):
        own = records.of_channel(ch)
        median = float(np.median(own.value)) if len(own) else None
        symbol = assignment.get(ch)
        summaries.append({
            "channel": ch,
            "symbol": domain.symbols[symbol] if symbol is not None else None,
            "density": int(counts[ch]) / total,
            "histogram": {"edges": np.histogram_bin_edges([], bins, ranges[ch]).tolist(),
                          "counts": hist[ch].tolist()},
            "median": median,
            "precision": (int(inside[ch, symbol]) / int(counts[ch])
                          if symbol is not None and counts[ch] else None),
            "effect": {"changed": int(changed[ch]), "n": done},
            "top_crops": crops(_strongest(best[ch], top_k)),
            "middle_crops": crops(own.nearest(median, middle_k) if median is not None else []),
            "outside_crops": crops(_strongest(outside[ch], outside_k)),
        })
    return summaries
