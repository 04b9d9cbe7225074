"""FolderDomain: your own images and labels, from a folder with a `labels.jsonl`.

    DATA/
      labels.jsonl     one JSON object per line, one line per image:
                       {"image": "images/0001.png", "label": ["3", "1", "4"],
                        "split": "train",                                  (optional)
                        "motifs": [{"symbol": "3", "box": [r0, c0, r1, c1]}, ...]}  (optional)
      images/...       greyscale PNG or .npy images, all of one size

* `image`: a path relative to DATA (an absolute path works too); `.png` (greyscale: 1, 2, 4, 8
  or 16 bit) or `.npy` (a 2-D array of bool, integers or floats).
* Ink: values in [0, 1] with 1 = ink. A PNG pixel maps to pixel / 255 (pixel / 65535 for
  16 bit), so ink is white on black, as `sparling sample` and `sparling export` write it;
  invert dark-on-light scans first. A `.npy` array is used as it is (values in [0, 1]).
* `label`: the answer as a non-empty list of token strings. The vocabulary is the sorted set
  of all tokens (token id = index) and is saved in a trained checkpoint's config.
* `split`: train, val or test. Without it a line's split is drawn from its image path
  (blake2b hash, a fixed key), 90 / 5 / 5 %, so it does not depend on the order of lines.
* `motifs` (for FPE / FNE / CE): each a symbol and a box, rows r0..r1-1 and columns c0..c1-1
  (end-exclusive) inside the image; the motif's centre is the box's centre. Give `motifs` on
  every line (an empty list for an image without any) or on none.
* Other keys are ignored (`sparling export` writes the source `seed`). Blank lines are skipped.

The domain's name is "folder:/absolute/path", so a checkpoint trained on it resolves it again
with `get_domain(name)`. Building the domain validates every line (and every image's size, from
its header alone) and raises one FolderError naming labels.jsonl and the line; the index keeps
each line's byte offset, so `sample(index, split)` re-reads that line and decodes its image on
demand: nothing else is kept in memory (about 30 bytes a line).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .base import SPLITS, Domain, Motif, Sample, register, register_prefix

__all__ = [
    "FolderDomain",
    "FolderError",
    "LABELS_FILE",
    "PREFIX",
    "export_domain",
    "folder_of",
    "hashed_split",
    "load_folder",
]

LABELS_FILE = "labels.jsonl"
PREFIX = "folder"  # domain names "folder:/absolute/path"
IMAGE_TYPES = (".png", ".npy")
SPLIT_PERCENT = (90, 5, 5)  # train / val / test of the lines without a "split"
_SPLIT_KEY = b"sparling-split-v1"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR = {2: "colour (RGB)", 3: "palette", 4: "grey + alpha", 6: "colour + alpha (RGBA)"}


class FolderError(ValueError):
    """A data folder is missing or one of its lines or images is invalid."""


def hashed_split(image: str) -> str:
    """The split of a line without one: 64 bits of blake2b (keyed) of its `image` string as
    written in labels.jsonl, mod 100: < 90 train, < 95 val, else test."""
    digest = hashlib.blake2b(image.encode("utf-8"), digest_size=8, key=_SPLIT_KEY).digest()
    bucket = int.from_bytes(digest, "big") % 100
    train, val, _ = SPLIT_PERCENT
    return "train" if bucket < train else "val" if bucket < train + val else "test"


def folder_of(name: str | None) -> Path | None:
    """The folder of a domain name "folder:/path", else None."""
    prefix, _, arg = (name or "").partition(":")
    return Path(arg) if prefix == PREFIX and arg else None


def load_folder(folder: str | Path) -> FolderDomain:
    """Index and validate `folder` now (re-reading it if it was loaded before) and register
    the domain under its name, so `get_domain("folder:/...")` returns this instance."""
    return register(FolderDomain(folder))


# -- image headers and pixels ------------------------------------------------------------------

def _png_header(path: str) -> tuple[tuple[int, int], str | None]:
    """((H, W), problem or None) from the PNG signature and IHDR chunk (26 bytes)."""
    fd = os.open(path, os.O_RDONLY)  # os-level: a third of open()'s cost, 100,000 times
    try:
        head = os.read(fd, 26)
    finally:
        os.close(fd)
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return (0, 0), "is not a PNG file (no PNG signature and IHDR header)"
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    if colour != 0:
        kind = _PNG_COLOUR.get(colour, f"colour type {colour}")
        return (height, width), (f"is a {kind} PNG; Sparling reads greyscale PNGs (convert "
                                 "it, e.g. with PIL: Image.open(p).convert('L').save(p))")
    return (height, width), None


def _npy_header(path: str) -> tuple[tuple[int, int], str | None]:
    """((H, W), problem or None) from the .npy header (numpy.lib.format), no data read."""
    fmt = np.lib.format
    with open(path, "rb") as f:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(f)
        else:
            return (0, 0), f"is a .npy file of format version {version}, not 1.0 or 2.0"
    if len(shape) != 2:
        return (0, 0), f"holds an array of shape {shape}; an image is a 2-D array (H, W)"
    if dtype.kind not in "biuf":
        return tuple(shape), f"holds {dtype} values; an image holds numbers in [0, 1]"
    return (int(shape[0]), int(shape[1])), None


def _is_npy(path: str) -> bool:
    return path[-4:].lower() == ".npy"


def _header(path: str) -> tuple[tuple[int, int], str | None]:
    return (_npy_header if _is_npy(path) else _png_header)(path)


def _read_image(path: str) -> np.ndarray:
    """Decode an image: (H, W) float32 ink values in [0, 1]."""
    if _is_npy(path):
        array = np.load(path, allow_pickle=False)
        if array.dtype == bool:
            return array.astype(np.float32)
        image = array.astype(np.float32)
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ValueError("its values must be finite numbers in [0, 1] (1 = ink)")
        return image
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        mode, array = im.mode, np.asarray(im)
    if mode == "1":
        return array.astype(np.float32)
    if mode == "L":
        return array.astype(np.float32) / 255
    if mode.startswith("I"):  # 16-bit greyscale: I;16 (or I in older PIL)
        return array.astype(np.float32) / 65535
    raise ValueError(f"PIL reads it as mode {mode!r}, not greyscale")


# -- the domain --------------------------------------------------------------------------------

def _where(labels: Path, lineno: int) -> str:
    return f"{labels} line {lineno}"


def _check_line(obj, where: str) -> tuple[str, list[str], str | None, list | None]:
    """(image, label, split or None, motifs or None) of a parsed line, or FolderError."""
    if not isinstance(obj, dict):
        raise FolderError(f"{where}: expected a JSON object "
                          '{"image": ..., "label": [...]}, got ' + type(obj).__name__)
    for key in ("image", "label"):
        if key not in obj:
            raise FolderError(f'{where}: missing field "{key}" (every line needs "image" '
                              'and "label")')
    image, label = obj["image"], obj["label"]
    if not isinstance(image, str) or not image:
        raise FolderError(f'{where}: "image" must be a path (a non-empty string), got {image!r}')
    if image[-4:].lower() not in IMAGE_TYPES:
        raise FolderError(f"{where}: image {image!r} is neither .png nor .npy")
    if type(label) is not list or not all(type(t) is str and t for t in label):
        raise FolderError(f'{where}: "label" must be a list of non-empty token strings, '
                          f'e.g. ["3", "1"], got {label!r}')
    if not label:
        raise FolderError(f'{where}: empty label (every image needs at least one token)')
    split = obj.get("split")
    if split is not None and split not in SPLITS:
        raise FolderError(f"{where}: unknown split {split!r} (use train, val or test, or "
                          "leave it out for the seeded 90/5/5 split)")
    motifs = obj.get("motifs")
    if motifs is not None:
        if not isinstance(motifs, list):
            raise FolderError(f'{where}: "motifs" must be a list, got {type(motifs).__name__}')
        for k, m in enumerate(motifs):
            box = m.get("box") if type(m) is dict else None
            symbol = m.get("symbol") if type(m) is dict else None
            if (type(symbol) is not str or not symbol or type(box) is not list
                    or len(box) != 4 or type(box[0]) is not int or type(box[1]) is not int
                    or type(box[2]) is not int or type(box[3]) is not int):
                raise FolderError(
                    f'{where}: motif {k} must be {{"symbol": "a non-empty string", "box": '
                    f"[r0, c0, r1, c1] (4 integers)}}, got {json.dumps(m)}")
    return image, label, split, motifs


class FolderDomain(Domain):
    """A folder of your own data (module docstring) behind the Domain interface.

    `vocabulary`: use these tokens (token id = index) instead of the folder's own, e.g. a
    trained model's; every label token must be one of them."""

    description = "your own images and labels (labels.jsonl in a folder)"
    label_rule = "as written in the folder's labels.jsonl"
    min_label_length = 1
    assignment = "one-to-one"

    def __init__(self, folder: str | Path, vocabulary: Sequence[str] | None = None):
        self.folder = Path(folder).expanduser().resolve()
        self.name = f"{PREFIX}:{self.folder}"
        self.labels_path = self.folder / LABELS_FILE
        self._root = str(self.folder)
        self._index(None if vocabulary is None else tuple(vocabulary))

    # -- indexing ------------------------------------------------------------------------------
    def _index(self, vocabulary: tuple[str, ...] | None) -> None:
        labels = self.labels_path
        if not self.folder.is_dir():
            raise FolderError(f"data folder {self.folder} does not exist")
        if not labels.is_file():
            raise FolderError(f"{self.folder} has no {LABELS_FILE} (one JSON object per image, "
                              "see \"Your own data\" in README.md)")
        known = None if vocabulary is None else set(vocabulary)
        offsets, lengths, linenos, splits, motif_counts, label_lengths = [], [], [], [], [], []
        tokens: set[str] = set()
        symbols: set[str] = set()
        headers: dict[str, tuple[int, int]] = {}  # image string -> (H, W)
        first: tuple[tuple[int, int], str, int] | None = None  # shape, image, line
        motifs_from: tuple[bool, int] | None = None  # (has "motifs", line) of the first line
        split_code = {s: i for i, s in enumerate(SPLITS)}
        stat = labels.stat()
        labels_str = str(labels)
        offset = 0
        with open(labels, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                start, offset = offset, offset + len(raw)
                if not raw.strip():
                    continue
                where = f"{labels_str} line {lineno}"
                try:
                    obj = json.loads(raw)
                except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
                    raise FolderError(f"{where}: not valid JSON ({e})") from None
                image, label, split, motifs = _check_line(obj, where)
                if known is not None:
                    unknown = [t for t in label if t not in known]
                    if unknown:
                        raise FolderError(f"{where}: token {unknown[0]!r} is not in the "
                                          f"model's vocabulary {list(vocabulary)}")
                if motifs_from is None:
                    motifs_from = (motifs is not None, lineno)
                elif (motifs is not None) != motifs_from[0]:
                    has, other = ("has", "has none") if motifs is not None else ("has no", "has")
                    raise FolderError(
                        f'{where}: {has} "motifs" but line {motifs_from[1]} {other}: give '
                        'every line "motifs" (an empty list for an image without motifs) '
                        "or none")
                shape = headers.get(image)
                if shape is None:
                    shape = headers[image] = self._image_shape(image, where)
                    if first is None:
                        first = (shape, image, lineno)
                        h, w = shape
                        if h < 2 or w < 2 or h % 2 or w % 2:
                            raise FolderError(
                                f"{where}: image {image} is {h}x{w} (height x width); Sparling "
                                "needs an even height and width >= 2 (pad or crop the images)")
                    elif shape != first[0]:
                        raise FolderError(
                            f"{where}: image {image} is {shape[0]}x{shape[1]} (height x width) "
                            f"but {first[1]} (line {first[2]}) is {first[0][0]}x{first[0][1]}: "
                            "all images must have one size")
                h, w = shape
                for k, m in enumerate(motifs or ()):
                    r0, c0, r1, c1 = m["box"]
                    if not (0 <= r0 < r1 <= h and 0 <= c0 < c1 <= w):
                        raise FolderError(
                            f"{where}: motif {k} ({m['symbol']!r}) box {m['box']} is outside "
                            f"the {h}x{w} image or empty (need 0 <= r0 < r1 <= {h} and "
                            f"0 <= c0 < c1 <= {w}; end-exclusive)")
                    symbols.add(m["symbol"])
                tokens.update(label)
                offsets.append(start)
                lengths.append(len(raw))
                linenos.append(lineno)
                splits.append(split_code[split or hashed_split(image)])
                motif_counts.append(len(motifs or ()))
                label_lengths.append(len(label))
        if not offsets:
            raise FolderError(f"{labels} has no lines (one JSON object per image)")
        self._stat = (stat.st_size, stat.st_mtime_ns)
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._lengths = np.asarray(lengths, dtype=np.int32)
        self._linenos = np.asarray(linenos, dtype=np.int32)
        self._splits = np.asarray(splits, dtype=np.int8)
        self._motif_counts = np.asarray(motif_counts, dtype=np.int32)
        self._label_lengths = np.asarray(label_lengths, dtype=np.int32)
        self._rows = {s: np.flatnonzero(self._splits == i) for s, i in split_code.items()}
        self.image_shape = first[0]
        self.vocabulary = vocabulary if vocabulary is not None else tuple(sorted(tokens))
        self.max_label_length = int(self._label_lengths.max())
        self.has_motifs = bool(symbols)
        self.symbols = tuple(sorted(symbols)) if symbols else self.vocabulary
        self.motif_channels = len(self.symbols)

    def _image_shape(self, image: str, where: str) -> tuple[int, int]:
        path = os.path.join(self._root, image)
        try:
            shape, problem = _header(path)
        except FileNotFoundError:
            raise FolderError(f"{where}: image {image} does not exist (looked for {path})"
                              ) from None
        except (OSError, ValueError) as e:
            raise FolderError(f"{where}: image {image} cannot be read ({e})") from None
        if problem:
            raise FolderError(f"{where}: image {image} {problem}")
        return shape

    # -- the Domain interface ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._offsets)

    def split_range(self, split: str) -> range:
        self.check_split(split)
        return range(0, len(self._rows[split]))

    def sample(self, seed: int, split: str = "train") -> Sample:
        """The `seed`-th line (0-based) of `split`, in file order: its image decoded now."""
        self.check_split(split)
        rows = self._rows[split]
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"index must be an integer, got {seed!r}")
        if not 0 <= seed < len(rows):
            raise IndexError(f"{self.name} has {len(rows)} {split} images; index {seed} is "
                             "out of range")
        row = int(rows[seed])
        where = _where(self.labels_path, int(self._linenos[row]))
        try:
            stat = self.labels_path.stat()
            if (stat.st_size, stat.st_mtime_ns) != self._stat:
                raise FolderError(f"{self.labels_path} changed since it was indexed; load the "
                                  "folder again")
            with open(self.labels_path, "rb") as f:
                f.seek(int(self._offsets[row]))
                obj = json.loads(f.read(int(self._lengths[row])))
        except OSError as e:
            raise FolderError(f"{where}: cannot be read ({e})") from None
        image = obj["image"]
        try:
            pixels = _read_image(os.path.join(self._root, image))
        except (OSError, ValueError, SyntaxError) as e:  # PIL raises SyntaxError on bad data
            raise FolderError(f"{where}: image {image} cannot be read ({e})") from None
        if pixels.shape != tuple(self.image_shape):
            raise FolderError(f"{where}: image {image} is {pixels.shape[0]}x{pixels.shape[1]}, "
                              f"not {self.image_shape[0]}x{self.image_shape[1]} as indexed")
        motifs = []
        for m in obj.get("motifs") or ():
            r0, c0, r1, c1 = m["box"]
            motifs.append(Motif(m["symbol"], (r0 + (r1 - r0) // 2, c0 + (c1 - c0) // 2),
                                (r0, c0, r1, c1)))
        return Sample(int(seed), pixels, list(obj["label"]), motifs)

    def theoretical_min_density(self, channels: int | None = None) -> float:
        """Mean motifs per train image (the mean label length when the folder has no motifs;
        all lines when it has no train lines) / (C * H * W)."""
        rows = self._rows["train"] if len(self._rows["train"]) else slice(None)
        counts = self._motif_counts if self.has_motifs else self._label_lengths
        h, w = self.image_shape
        return float(counts[rows].mean()) / ((channels or self.motif_channels) * h * w)

    def assignment_for(self, channels: int):
        """One-to-one with a channel per symbol, else many-to-one."""
        return "one-to-one" if channels == len(self.symbols) else "many-to-one"

    def model_config_overrides(self) -> dict:
        return {**super().model_config_overrides(), "vocabulary": list(self.vocabulary)}

    def describe(self) -> dict:
        return {**super().describe(), "folder": str(self.folder),
                "lines": {s: len(self._rows[s]) for s in SPLITS}}

    def require_split(self, split: str, why: str) -> None:
        """FolderError unless `split` has at least one line."""
        if not len(self.split_range(split)):
            raise FolderError(
                f"{self.labels_path} has no {split} lines, and {why} needs some: mark lines "
                f'"split": "{split}", or leave "split" out for the seeded 90/5/5 split')


register_prefix(PREFIX, FolderDomain)


# -- export ------------------------------------------------------------------------------------

def export_domain(domain: Domain, out: str | Path, n: int, first_seed: int | None = None,
                  split: str = "train", force: bool = False, mark_split: bool = False,
                  progress: bool = False) -> Path:
    """Write `domain`'s samples first_seed .. first_seed + n - 1 of `split` (default: its
    first) as a data folder: images/SEED.png (ink white on black, pixel = round(255 * ink))
    and labels.jsonl with label, motifs (when the domain has them) and the seed; with
    `mark_split` every line says "split": SPLIT, else the folder's seeded split applies.

    Written into a temporary folder beside OUT and renamed into place: OUT is never left
    half-written. An existing non-empty OUT is refused unless `force` (then replaced)."""
    from PIL import Image
    from tqdm.auto import tqdm

    domain.check_split(split)
    if n < 1:
        raise ValueError("n must be >= 1")
    seeds = domain.split_range(split)
    first = seeds.start if first_seed is None else first_seed
    if first < seeds.start or first + n > seeds.stop:
        raise ValueError(f"{domain.name} {split} seeds are {seeds.start} .. {seeds.stop - 1}; "
                         f"asked for {first} .. {first + n - 1}")
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise FolderError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FolderError(f"{out} is not empty; give --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.export-"))
    old = None
    try:
        (tmp / "images").mkdir()
        lines = []
        for seed in tqdm(range(first, first + n), desc="export", unit="img", disable=not progress):
            s = domain.sample(seed, split)
            name = f"images/{seed}.png"
            pixels = np.clip(np.round(np.asarray(s.image, dtype=np.float64) * 255), 0, 255)
            Image.fromarray(pixels.astype(np.uint8), mode="L").save(tmp / name)
            line = {"image": name, "label": list(s.label)}
            if mark_split:
                line["split"] = split
            if domain.has_motifs:
                line["motifs"] = [{"symbol": m.symbol, "box": [int(v) for v in m.box]}
                                  for m in s.motifs]
            line["seed"] = seed
            lines.append(json.dumps(line) + "\n")
        (tmp / LABELS_FILE).write_text("".join(lines))
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700
        if out.exists():  # empty, or --force: move it aside, swap, then delete it
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / "previous")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / "previous").exists() and not out.exists():
            os.replace(old / "previous", out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out
