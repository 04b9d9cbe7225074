"""Inspect a trained model: activations, per-image motif analysis, interventions, channel
summaries. Pure library code for the service (knows nothing of HTTP); every function runs the
model in eval mode under `torch.inference_mode`, so thresholds and BatchNorm statistics are
never touched.

Images are 2-D numpy arrays of ink values in [0, 1] (1 = ink), (H, W) = the model's size;
`prepare_image` brings other sizes there. Maps are the sparse motif map (C, H, W); an
activation is "on" where `model.bottleneck.active` says so (nonzero for MT / ST / TopK).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .domains import digit_circle as dc
from .metrics import align_image, channel_assignment
from .model import SparlingModel

__all__ = [
    "FITS",
    "prepare_image",
    "sparse_activations",
    "run_images",
    "run_image",
    "analyze",
    "intervene",
    "channel_summaries",
    "parse_channel_to_digit",
]

FITS = ("none", "pad", "resize")


def _check_eval(model: SparlingModel) -> None:
    if model.training:
        raise ValueError("the model is in training mode; call model.eval() before inspecting "
                         "it (training mode would move thresholds and BatchNorm statistics)")


def prepare_image(array, size: int, fit: str = "none") -> np.ndarray:
    """A 2-D array of ink values in [0, 1] -> (size, size) float32.

    fit="none": the shape must already be (size, size); "pad": pad with zeros / crop, centred;
    "resize": nearest-neighbour resize. Raises ValueError naming the problem."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    try:
        image = np.asarray(array, dtype=np.float64)  # checked before narrowing to float32
    except (ValueError, TypeError) as e:  # ragged rows, strings
        raise ValueError(f"the image must be a rectangular 2-D array of numbers ({e})") from e
    if image.ndim != 2:
        raise ValueError(f"the image must be 2-D (rows of numbers), got {image.ndim} dimensions")
    if image.size == 0:
        raise ValueError("the image is empty")
    if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
        raise ValueError("image values must be finite numbers in [0, 1] (1 = ink)")
    image = image.astype(np.float32)
    h, w = image.shape
    if (h, w) == (size, size):
        return image
    if fit == "none":
        raise ValueError(f"expected a {size}x{size} image, got {h}x{w} (rows x columns); "
                         "send fit=pad or fit=resize to adapt it")
    if fit == "resize":
        rows = np.minimum((np.arange(size) + 0.5) * h / size, h - 1).astype(np.int64)
        cols = np.minimum((np.arange(size) + 0.5) * w / size, w - 1).astype(np.int64)
        return np.ascontiguousarray(image[rows][:, cols])
    out = np.zeros((size, size), dtype=np.float32)  # "pad": centre, cropping what overhangs
    src_r, dst_r, n_r = _centred(h, size)
    src_c, dst_c, n_c = _centred(w, size)
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
    s = model.config.image_size
    batch = np.asarray(images, dtype=np.float32)
    if batch.ndim == 2:
        batch = batch[None]
    if batch.ndim != 3 or batch.shape[1:] != (s, s):
        raise ValueError(f"expected {s}x{s} images, got shape {batch.shape}; "
                         "use prepare_image first")
    device = next(model.parameters()).device
    return torch.from_numpy(np.ascontiguousarray(batch))[:, None].to(device)  # (N, 1, H, W)


def _result(motif_map: torch.Tensor, active: torch.Tensor,
            sequence: list[int], probabilities: list[float], dense: bool) -> dict:
    c, h, w = motif_map.shape
    n_active = int(active.sum())
    return {
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


def run_images(model: SparlingModel, images: Sequence[np.ndarray] | np.ndarray,
               dense: bool = False) -> list[dict]:
    """Run (N, H, W) images: per image its sparse activations, n_active, density, decoded
    sequence and per-token probabilities (end token included); the dense (C, H, W) map as
    nested lists when `dense`."""
    _check_eval(model)
    with torch.inference_mode():
        decoded = model.generate(_to_tensor(model, images))
        active = model.bottleneck.active(decoded.motifs)
        return [_result(decoded.motifs[i], active[i], decoded.sequences[i],
                        decoded.probabilities[i], dense)
                for i in range(decoded.motifs.shape[0])]


def run_image(model: SparlingModel, image: np.ndarray, dense: bool = False) -> dict:
    """`run_images` for one (H, W) image."""
    return run_images(model, np.asarray(image)[None], dense)[0]


def parse_channel_to_digit(mapping: Mapping | None, channels: int) -> dict[int, int] | None:
    """metrics.json's {"channel": digit} -> {channel: digit}; None when absent or malformed."""
    if not isinstance(mapping, Mapping):
        return None
    try:
        parsed = {int(c): int(d) for c, d in mapping.items()}
    except (TypeError, ValueError):
        return None
    if any(not 0 <= c < channels or not 0 <= d < dc.NUM_DIGITS for c, d in parsed.items()):
        return None
    return parsed


def _percent(a: int, b: int) -> float | None:
    return 100.0 * a / b if b else None


def analyze(model: SparlingModel, image: np.ndarray, motifs: Sequence,
            channel_to_digit: Mapping[int, int] | None = None,
            label: Sequence[int] | None = None) -> dict:
    """One image against its ground truth (SPEC 3): which digits were hit (the fired channel
    is assigned to the digit), confused (another channel) or missed, the false-positive
    activations and the per-image FPE / FNE / CE in percent (None where undefined).

    `motifs`: objects or dicts with `digit` and `box` (row0, col0, row1, col1), end-exclusive.
    `channel_to_digit`: the checkpoint's assignment; without one, the assignment that best
    fits this image alone is used."""
    _check_eval(model)
    c = model.config.motif_channels
    with torch.inference_mode():
        decoded = model.generate(_to_tensor(model, image))
        motif_map = decoded.motifs[0]  # (C, H, W)
        active = model.bottleneck.active(decoded.motifs)[0]
        alignment = align_image(motif_map, motifs, active)
    if channel_to_digit is None:
        confusion = np.zeros((dc.NUM_DIGITS, c), dtype=np.int64)
        for m in alignment.matches:
            if m.channel is not None and 0 <= m.digit < dc.NUM_DIGITS:
                confusion[m.digit, m.channel] += 1
        channel_to_digit = channel_assignment(confusion)
    digits = []
    for m in alignment.matches:
        if m.channel is None:
            status = "missed"
        elif channel_to_digit.get(m.channel) == m.digit:
            status = "hit"
        else:
            status = "confused"
        digits.append({"digit": m.digit, "box": list(m.box), "status": status,
                       "channel": m.channel, "value": m.value, "row": m.row, "col": m.col})
    fp = [{"channel": ch, "row": r, "col": col, "value": v} for (ch, r, col), v in
          zip(alignment.false_positives.tolist(), alignment.false_positive_values.tolist(),
              strict=True)]
    predicted, hits = alignment.predicted, sum(d["status"] == "hit" for d in digits)
    return {
        "sequence": decoded.sequences[0],
        "probabilities": decoded.probabilities[0],
        "label": list(label) if label is not None else None,
        "digits": digits,
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
        return {
            "before": {"sequence": before_seq[0], "probabilities": before_prob[0]},
            "after": {"sequence": after_seq[0], "probabilities": after_prob[0]},
            "removed": removed,
            "added": len(add),
            "activations_after": sparse_activations(edited[0], active),
        }


@dataclass
class _Batch:
    samples: list[dc.DigitCircleSample]
    maps: torch.Tensor  # (B, C, H, W)
    active: torch.Tensor  # (B, C, H, W) bool


def _summary_batches(model: SparlingModel, n: int, first_seed: int, batch_size: int,
                     ) -> Iterator[_Batch]:
    for start in range(0, n, batch_size):
        samples = [dc.sample(first_seed + i) for i in range(start, min(n, start + batch_size))]
        maps = model.sparse_motifs(_to_tensor(model, np.stack([s.image for s in samples])))
        yield _Batch(samples, maps, model.bottleneck.active(maps))


def _crop(image: np.ndarray, row: int, col: int, size: int) -> tuple[list, list[int]]:
    h, w = image.shape
    r0, c0 = max(row - size // 2, 0), max(col - size // 2, 0)
    r1, c1 = min(row - size // 2 + size, h), min(col - size // 2 + size, w)
    return image[r0:r1, c0:c1].astype(int).tolist(), [r0, c0]


def channel_summaries(model: SparlingModel, n: int = 500,
                      first_seed: int = dc.VALIDATION_SEEDS_START,
                      channel_to_digit: Mapping[int, int] | None = None, *, bins: int = 20,
                      top_k: int = 12, crop: int = 20, batch_size: int = 50,
                      max_values: int = 4_000_000) -> list[dict]:
    """Per channel over the DigitCircle images first_seed .. first_seed + n - 1: its digit
    (`channel_to_digit`, else the assignment that best fits these images), density, a
    histogram of its "on" values, and the `top_k` strongest images for it (one crop per
    image, `crop` x `crop` pixels around its strongest activation, clipped to the image).

    The histogram is exact; when more than `max_values` values are on (a dense model), it is
    counted in a second pass instead of holding them all."""
    _check_eval(model)
    if n < 1:
        raise ValueError("n must be >= 1")
    c = model.config.motif_channels
    counts = np.zeros(c, dtype=np.int64)
    lo, hi = np.full(c, np.inf), np.full(c, -np.inf)
    values: list[list[np.ndarray]] | None = [[] for _ in range(c)]
    best: list[list[tuple[float, int, int, int]]] = [[] for _ in range(c)]  # value, seed, r, c
    confusion = np.zeros((dc.NUM_DIGITS, c), dtype=np.int64)
    total, stored = 0, 0
    with torch.inference_mode():
        for batch in _summary_batches(model, n, first_seed, batch_size):
            b, _, h, w = batch.maps.shape
            total += b * h * w
            on_values = torch.where(batch.active, batch.maps.float(), torch.tensor(-np.inf))
            peak, where = on_values.flatten(2).max(dim=2)  # (B, C) per image and channel
            peak, where = peak.numpy(), where.numpy()
            counts += batch.active.sum(dim=(0, 2, 3)).numpy()
            for ch in range(c):
                v = batch.maps[:, ch][batch.active[:, ch]].float().numpy()
                if v.size:
                    lo[ch], hi[ch] = min(lo[ch], v.min()), max(hi[ch], v.max())
                    if values is not None:
                        values[ch].append(v)
                    stored += v.size
            if stored > max_values:
                values = None  # too many to hold: histogram in a second pass
            for i, s in enumerate(batch.samples):
                for ch in range(c):
                    if np.isfinite(peak[i, ch]):
                        r, col = divmod(int(where[i, ch]), w)
                        best[ch].append((float(peak[i, ch]), s.seed, r, col))
                if channel_to_digit is None:
                    for m in align_image(batch.maps[i], s.motifs, batch.active[i]).matches:
                        if m.channel is not None:
                            confusion[m.digit, m.channel] += 1
        ranges = [(float(lo[ch]), float(hi[ch])) if counts[ch] else (0.0, 1.0)
                  for ch in range(c)]
        hist = np.zeros((c, bins), dtype=np.int64)
        if values is not None:
            for ch in range(c):
                if values[ch]:
                    hist[ch] = np.histogram(np.concatenate(values[ch]), bins, ranges[ch])[0]
        else:
            for batch in _summary_batches(model, n, first_seed, batch_size):
                for ch in range(c):
                    v = batch.maps[:, ch][batch.active[:, ch]].float().numpy()
                    hist[ch] += np.histogram(v, bins, ranges[ch])[0]
    assignment = (dict(channel_to_digit) if channel_to_digit is not None
                  else channel_assignment(confusion))
    images: dict[int, np.ndarray] = {}
    summaries = []
    for ch in range(c):
        top = sorted(best[ch], key=lambda t: (-t[0], t[1]))[:top_k]
        crops = []
        for value, seed, r, col in top:
            if seed not in images:
                images[seed] = dc.sample(seed).image
            pixels, origin = _crop(images[seed], r, col, crop)
            crops.append({"seed": seed, "row": r, "col": col, "value": value, "crop": pixels,
                          "crop_origin": origin})
        summaries.append({
            "channel": ch,
            "digit": assignment.get(ch),
            "density": int(counts[ch]) / total,
            "histogram": {"edges": np.histogram_bin_edges([], bins, ranges[ch]).tolist(),
                          "counts": hist[ch].tolist()},
            "top_crops": crops,
        })
    return summaries
