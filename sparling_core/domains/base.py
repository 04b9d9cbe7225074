"""The Domain interface: what Sparling needs to know about a dataset with ground-truth motifs.

A domain draws samples (an image, its label tokens and the motifs in it) deterministically
from a seed or an index, names its vocabulary and motif symbols, and splits its seeds into
train / val / test ranges. Everything generic (model, training, metrics, the service, the
explorer) works through this interface and resolves a domain by name from the registry
(`get_domain("digit-circle")`); a checkpoint's config names its domain.

To add a domain: subclass `Domain`, fill in the class attributes and `sample`, and call
`register(MyDomain())` (or `register_factory` for one built lazily) in the module that
defines it; import that module from `sparling_core/domains/__init__.py`. Domains built from
an argument (a folder of your own data) register a prefix instead: `get_domain("folder:/data")`
calls the factory of `register_prefix("folder", ...)` with "/data" once and caches the domain
under its name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

__all__ = [
    "Assignment",
    "Domain",
    "Motif",
    "Sample",
    "SPLITS",
    "get_domain",
    "domain_names",
    "register",
    "register_factory",
    "register_prefix",
    "DEFAULT_DOMAIN",
]

Assignment = Literal["one-to-one", "many-to-one"]
SPLITS = ("train", "val", "test")
DEFAULT_DOMAIN = "digit-circle"  # a checkpoint config without "domain" was trained on it


@dataclass(frozen=True)
class Motif:
    """One ground-truth motif in an image: its symbol, centre (row, col) and box
    (row0, col0, row1, col1), end-exclusive."""

    symbol: str
    center: tuple[int, int]
    box: tuple[int, int, int, int]

    def to_dict(self) -> dict:
        return {"symbol": self.symbol, "center": list(self.center), "box": list(self.box)}


@dataclass
class Sample:
    """One image of a domain. `image` is (H, W) with ink values in [0, 1] (1 = ink)."""

    seed: int  # the seed (generated domains) or the index (folder domains)
    image: np.ndarray
    label: list[str]  # the answer's tokens
    motifs: list[Motif] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"seed": self.seed, "label": list(self.label),
                "motifs": [m.to_dict() for m in self.motifs]}


class Domain:
    """Base class of every domain. Subclasses set the attributes and implement `sample`."""

    name: str
    image_shape: tuple[int, int]  # (H, W), both even (the motif model works on 2x2 blocks)
    vocabulary: tuple[str, ...]  # output tokens; token id = index
    max_label_length: int  # in tokens, end token not counted
    min_label_length: int = 1  # decoding never stops before this many tokens
    symbols: tuple[str, ...]  # the kinds of ground-truth motif
    assignment: Assignment = "one-to-one"  # how CE maps channels to symbols
    motif_channels: int  # the default number of channels of the sparse map
    box_padding: int = 0  # evaluation pads every box by this many pixels (clipped)
    has_motifs: bool = True  # False: no motif ground truth (FPE / FNE / CE undefined)
    description: str = ""
    label_rule: str = ""  # how the label is read off the image, for people (explorer, docs)

    # -- what a subclass provides -------------------------------------------------------
    def sample(self, seed: int, split: str = "train") -> Sample:
        """The sample for `seed` (deterministic). Folder domains index within `split`."""
        raise NotImplementedError

    def split_range(self, split: str) -> range:
        """The seeds (or indices) of a split: train / val / test, disjoint."""
        raise NotImplementedError

    def theoretical_min_density(self, channels: int | None = None) -> float:
        """One active (channel, pixel) per motif: E[motifs per image] / (C * H * W)."""
        raise NotImplementedError

    # -- derived helpers ----------------------------------------------------------------
    def check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")

    def assignment_for(self, channels: int) -> Assignment:
        """How CE maps a model's `channels` to this domain's symbols (default: `assignment`)."""
        return self.assignment

    def token_ids(self, label: Sequence[str]) -> list[int]:
        index = self._token_index
        try:
            return [index[t] for t in label]
        except KeyError as e:
            raise ValueError(f"token {e.args[0]!r} is not in the {self.name} vocabulary") from e

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.vocabulary[i] for i in ids]

    def symbol_index(self, symbol: str) -> int:
        try:
            return self._symbol_index[symbol]
        except KeyError as e:
            raise ValueError(f"symbol {symbol!r} is not a {self.name} motif symbol") from e

    @property
    def _token_index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.vocabulary)}

    @property
    def _symbol_index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.symbols)}

    def ink_fraction_range(self, n: int = 200) -> tuple[float, float, float]:
        """(low, mean, high) of the ink fraction over the first n training images: the
        range of inputs the models of this domain were trained on (cached)."""
        cached = getattr(self, "_ink_range", None)
        if cached is None:
            seeds = self.split_range("train")
            values = np.array([float(np.mean(self.sample(seeds[i], "train").image))
                               for i in range(min(n, len(seeds)))])
            cached = (float(values.min()), float(values.mean()), float(values.max()))
            self._ink_range = cached
        return cached

    def samples(self, seeds: Sequence[int], split: str = "train") -> list[Sample]:
        return [self.sample(int(s), split) for s in seeds]

    def batch(self, samples: Sequence[Sample]) -> tuple[torch.Tensor, list[list[int]]]:
        """Samples -> (images (N, 1, H, W) float32, label token ids)."""
        return images_to_tensor(np.stack([s.image for s in samples])), [
            self.token_ids(s.label) for s in samples]

    def first_seed(self, split: str) -> int:
        self.check_split(split)
        return self.split_range(split).start

    def describe(self) -> dict:
        """A JSON-able description (the REST API's /v1/domains entries)."""
        return {
            "name": self.name,
            "description": self.description,
            "label_rule": self.label_rule,
            "image_shape": list(self.image_shape),
            "vocabulary": list(self.vocabulary),
            "max_label_length": self.max_label_length,
            "symbols": list(self.symbols),
            "assignment": self.assignment,
            "motif_channels": self.motif_channels,
            "has_motifs": self.has_motifs,
            "splits": {s: {"start": self.split_range(s).start, "stop": self.split_range(s).stop}
                       for s in SPLITS},
        }

    def model_config_overrides(self) -> dict:
        """The ModelConfig fields that this domain fixes."""
        h, w = self.image_shape
        return {"image_size": h if h == w else [h, w], "vocab_size": len(self.vocabulary),
                "max_digits": self.max_label_length, "min_length": self.min_label_length,
                "motif_channels": self.motif_channels}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, image_shape={self.image_shape}, "
                f"vocabulary={len(self.vocabulary)} tokens, symbols={len(self.symbols)})")


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (H, W) images with values in [0, 1] -> float tensor (N, 1, H, W)."""
    t = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    if t.dim() == 2:
        t = t[None]
    return t[:, None]


_REGISTRY: dict[str, Domain] = {}
_FACTORIES: dict[str, Callable[[], Domain]] = {}
_PREFIXES: dict[str, Callable[[str], Domain]] = {}


def register(domain: Domain) -> Domain:
    """Make `domain` available by its name (replacing one of the same name)."""
    if not getattr(domain, "name", None):
        raise ValueError("a domain needs a non-empty name")
    _REGISTRY[domain.name] = domain
    return domain


def register_factory(name: str, factory: Callable[[], Domain]) -> None:
    """Register a domain built on first use (for domains that are costly to set up)."""
    _FACTORIES[name] = factory


def register_prefix(prefix: str, factory: Callable[[str], Domain]) -> None:
    """Resolve names "PREFIX:ARG" by `factory(ARG)`, a domain whose `name` is the canonical
    "PREFIX:ARG" (e.g. an absolute path); built on first use and cached under that name."""
    _PREFIXES[prefix] = factory


def domain_names() -> list[str]:
    return sorted(set(_REGISTRY) | set(_FACTORIES))


def get_domain(name: str | None) -> Domain:
    """The registered domain `name` (None: the default, digit-circle), or the one a prefix
    factory builds for "PREFIX:ARG". ValueError naming the registered ones otherwise."""
    name = name or DEFAULT_DOMAIN
    if name not in _REGISTRY and name in _FACTORIES:
        register(_FACTORIES[name]())
    prefix, _, arg = name.partition(":")
    if name not in _REGISTRY and arg and prefix in _PREFIXES:
        return register(_PREFIXES[prefix](arg))  # ValueError from the factory propagates
    if name not in _REGISTRY:
        raise ValueError(f"unknown domain {name!r}; registered: {', '.join(domain_names())}"
                         + "".join(f", {p}:..." for p in sorted(_PREFIXES)))
    return _REGISTRY[name]
