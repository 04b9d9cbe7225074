"""The Sparling model: local motif model -> sparsity bottleneck -> sequence decoder.

    image (N, 1, 100, 100)
      -> MotifModel: space-to-depth 2x2, 3x3 residual convs at 50x50, 1x1 conv, depth-to-space
         -> motif logits (N, 10, 100, 100), receptive field 2 * (1 + 2 * layers) px
      -> sparsity layer (MT by default)  -> sparse motif map (N, 10, 100, 100)
      -> decoder -> digit sequence, one of
         ChannelDecoder ("channels", default): one token per channel (its activation mass
           and mass-weighted place), tokens sorted by angle around the centroid of the
           active channels, transformer encoder, autoregressive transformer decoder
         MotifDecoder ("cells"): max-pool into a grid of cell tokens with centroid-relative
           position features, transformer encoder and decoder (generic, slow to learn)

Compute goes into the motif model (it must find 12 x 9 stamps in heavy noise); the
downstream task (read <= 6 points, emit a short cyclic sequence) gets a small decoder.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.sparsity import SPARSITY_KINDS, SparsityLayer, make_sparsity_layer
from . import batch_invariant as bi

__all__ = [
    "ModelConfig",
    "SparlingModel",
    "ModelOutput",
    "Decoded",
    "EOS",
    "BOS",
    "encode_labels",
    "digit_circle_small",
    "digit_circle_tiny",
]

NUM_CLASSES = 10  # DigitCircle's vocabulary size: the default of ModelConfig.vocab_size
EOS = 10  # DigitCircle's end token (= vocab_size); generic code uses ModelConfig.eos
BOS = 11  # DigitCircle's start token (= vocab_size + 1); generic code uses ModelConfig.bos
IGNORE = -100
DECODER_KINDS = ("points", "channels", "cells")
PRESENCE_POOLS = ("max", "mean", "max+mean")
POINT_ENCODERS = ("set", "relative")
MAX_IMAGE_SIDE = 4096  # a config's image height / width at most


@dataclass
class ModelConfig:
    # The defaults are DigitCircle's; `Domain.model_config_overrides()` gives another domain's.
    domain: str = "digit-circle"  # the registered domain the model reads (sparling_core.domains)
    image_size: int | list[int] = 100  # H = W, or [H, W]
    motif_channels: int = 10  # one channel per motif kind: the map is (10, 100, 100)
    motif_width: int = 32
    motif_layers: int = 3  # 3x3 convs at half resolution; 3 -> receptive field 14 px >= 12
    phase_tied: bool = False  # same motif response at even and odd pixels (4x motif compute)
    sparsity: str = "mt"  # mt | st | l1 | kl | topk | none
    batch_norm: bool = True  # BatchNorm in front of the bottleneck (SPEC 1.1)
    penalty_weight: float = 1.0  # lambda of the L1 / KL baselines
    accumulate_survivors: float | None = None  # pool batches for the quantile (MT / ST)
    initial_density: float = 0.5
    # points: the generic point-set decoder (the strongest max_points activations, each a
    # token of channel, value and place; no domain rule). channels: DigitCircle-shaped
    # (channel tokens sorted by angle). cells: a max-pooled grid of cell tokens.
    decoder: str = "channels"
    pool: int = 4  # cell size in pixels of the "cells" decoder
    max_points: int = 32  # the "points" decoder reads at most this many activations
    fourier_features: int = 16  # random Fourier frequencies of a point's place ("points")
    # "points" also reads one summary token per channel (mass, peak, mass-weighted mean
    # place; no order, no domain rule): its gradient reaches every active pixel at any
    # density, where the top max_points alone leave most of a dense early map untrained
    channel_summaries: bool = False
    # how the "points" decoder's encoder relates points: "set", a plain transformer encoder
    # (each point knows only its own place); "relative", each attention logit between two
    # points also gets a learned bias from their displacement (RelativePointEncoder), as in
    # point-cloud transformers. Neither knows a domain rule.
    point_encoder: str = "set"
    # "channels" only: each channel token also gets its cyclic neighbours' features (the
    # channels just before and after it in angular order), so that naming the digit after
    # the previous one is one lookup instead of a learned rank arithmetic
    # (experiments/channel_decoder_probe.py measures what it buys). False in older checkpoints.
    cyclic_neighbours: bool = False
    d_model: int = 64
    n_heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    max_digits: int = 6  # the maximum label length in tokens (end token not counted)
    vocab_size: int = NUM_CLASSES  # output tokens; the end token is vocab_size
    min_length: int = 1  # decoding never ends before this many tokens
    # Auxiliary loss from the label alone: which digits the answer contains, predicted from
    # each channel pooled over the image (presence_pool). No motif positions are used; it
    # gives the motif model a direct signal that shortens the dense start of training.
    presence_weight: float = 1.0
    # How the presence head pools each channel over the image: "max" (its strongest
    # activation; the gradient reaches one pixel per image), "mean" (every pixel) or
    # "max+mean" (their sum). A channel that must learn a motif the trunk does not yet
    # detect learns it far faster from the mean's dense gradient
    # (experiments/fresh_channel_probe.py).
    presence_pool: str = "max"
    # An auxiliary presence head on the motif model's trunk (its features before the
    # channel head; pooled like presence_pool), weighted by this in the loss (0: none, and
    # no extra weights). Labels only, like the presence loss. Why: the channel presence
    # head has one path per channel, so a token that no channel claims teaches the trunk
    # nothing, and a channel resampled onto it later finds no features to latch on to
    # (experiments/fresh_channel_probe.py: AUC 0.49 for the unclaimed 7). This head keeps
    # features for every token in the trunk from the first batch.
    trunk_presence_weight: float = 0.0
    # The output tokens by id (vocab_size of them), saved so that a checkpoint knows its
    # tokens without its domain (a folder of your own data); None: the domain's vocabulary.
    vocabulary: list[str] | None = None

    def __post_init__(self):
        self._check_types()
        if self.sparsity not in SPARSITY_KINDS:
            raise ValueError(f"sparsity must be one of {SPARSITY_KINDS}, got {self.sparsity!r}")
        if self.point_encoder not in POINT_ENCODERS:
            raise ValueError(f"point_encoder must be one of {POINT_ENCODERS}, "
                             f"got {self.point_encoder!r}")
        if self.presence_pool not in PRESENCE_POOLS:
            raise ValueError(f"presence_pool must be one of {PRESENCE_POOLS}, "
                             f"got {self.presence_pool!r}")
        if self.decoder not in DECODER_KINDS:
            raise ValueError(f"decoder must be one of {DECODER_KINDS}, got {self.decoder!r}")
        if isinstance(self.image_size, (list, tuple)):
            self.image_size = list(self.image_size)
        h, w = self.image_shape
        if h < 2 or w < 2 or h % 2 or w % 2:
            raise ValueError(f"image height and width must be even and >= 2, got {h}x{w}")
        if self.cyclic_neighbours and self.decoder != "channels":
            raise ValueError("cyclic_neighbours is an option of the 'channels' decoder")
        if self.decoder != "points" and (h != w or h % self.pool):
            raise ValueError(f"the {self.decoder!r} decoder needs square images divisible "
                             "by pool; use decoder 'points'")
        if self.d_model % self.n_heads:
            raise ValueError("d_model must be divisible by n_heads")
        if self.motif_layers < 1 or self.motif_width < 1:
            raise ValueError("motif_layers and motif_width must be >= 1")
        if not 0 < self.initial_density <= 1:
            raise ValueError("initial_density must be in (0, 1]")
        if self.max_points < 1 or self.fourier_features < 1:
            raise ValueError("max_points and fourier_features must be >= 1")
        if (self.vocab_size < 1 or self.max_digits < 1
                or not 0 <= self.min_length <= self.max_digits):
            raise ValueError("vocab_size and max_digits must be >= 1, min_length in "
                             "0..max_digits")
        if self.vocabulary is not None:
            self.vocabulary = list(self.vocabulary)
            if (len(self.vocabulary) != self.vocab_size
                    or len(set(self.vocabulary)) != len(self.vocabulary)
                    or not all(isinstance(t, str) and t for t in self.vocabulary)):
                raise ValueError(f"vocabulary must be {self.vocab_size} (vocab_size) distinct "
                                 "non-empty strings")

    def _check_types(self) -> None:
        """Every field has its type (an int is an int: not a float, not a bool) and lies in
        sane bounds, so that a hand-edited or foreign config fails here with the field's
        name instead of later, inside the model."""
        def integer(name: str, value, low: int, high: int) -> int:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if not low <= value <= high:
                raise ValueError(f"{name} must be in {low}..{high}, got {value}")
            return int(value)

        def number(name: str, value, low: float, high: float) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and low <= value <= high):
                raise ValueError(f"{name} must be a finite number in [{low}, {high}], "
                                 f"got {value}")

        for name in ("domain", "sparsity", "decoder", "presence_pool"):
            value = getattr(self, name)
            if not isinstance(value, str) or not 0 < len(value) <= 1000:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        for name in ("phase_tied", "batch_norm", "channel_summaries", "cyclic_neighbours"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.image_size, (list, tuple)):
            if len(self.image_size) != 2:
                raise ValueError("image_size must be one number or [height, width]")
            self.image_size = [integer("image_size", v, 2, MAX_IMAGE_SIDE)
                               for v in self.image_size]
        else:
            self.image_size = integer("image_size", self.image_size, 2, MAX_IMAGE_SIDE)
        for name, low, high in (("motif_channels", 1, 1024), ("motif_width", 1, 4096),
                                ("motif_layers", 1, 64), ("pool", 1, MAX_IMAGE_SIDE),
                                ("max_points", 1, 65_536), ("fourier_features", 1, 4096),
                                ("d_model", 1, 8192), ("n_heads", 1, 256),
                                ("encoder_layers", 0, 64), ("decoder_layers", 0, 64),
                                ("max_digits", 1, 4096), ("vocab_size", 1, 100_000),
                                ("min_length", 0, 4096)):
            setattr(self, name, integer(name, getattr(self, name), low, high))
        for name, low, high in (("penalty_weight", 0.0, 1e6), ("initial_density", 0.0, 1.0),
                                ("presence_weight", 0.0, 1e6),
                                ("trunk_presence_weight", 0.0, 1e6)):
            number(name, getattr(self, name), low, high)
        if self.accumulate_survivors is not None:
            number("accumulate_survivors", self.accumulate_survivors, 0.0, 1e12)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W)."""
        if isinstance(self.image_size, (list, tuple)):
            return int(self.image_size[0]), int(self.image_size[1])
        return int(self.image_size), int(self.image_size)

    @property
    def eos(self) -> int:
        return self.vocab_size

    @property
    def bos(self) -> int:
        return self.vocab_size + 1

    @property
    def receptive_field(self) -> int:
        return 2 * (1 + 2 * self.motif_layers)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def digit_circle_small() -> ModelConfig:
    """The shipped DigitCircle model: the default config with the phase-tied motif model.
    (`phase_tied` defaults to False so that configs saved before it existed load as they
    were trained.)"""
    return ModelConfig(phase_tied=True)


def digit_circle_tiny() -> ModelConfig:
    """A few-thousand-parameter model for tests."""
    return ModelConfig(motif_width=8, motif_layers=3, d_model=16, n_heads=2,
                       encoder_layers=1, decoder_layers=1)


class _ResidualConv(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(F.relu(x))


class MotifModel(nn.Module):
    """Local convolutional motif model g: (N, 1, H, W) -> (N, C, H, W).

    It works at half resolution (2x2 space-to-depth), so by default a motif at an even and
    at an odd pixel are different input patterns to it, learned separately. `phase_tied`
    runs it on the four 1-px shifts of the image and reads every output pixel from the
    copy that puts that pixel at the same sub-pixel phase: the same weights then answer at
    every pixel (equivariant to 1-px shifts), for 4x the compute."""

    def __init__(self, channels: int, width: int, layers: int, phase_tied: bool = False,
                 trunk_outputs: int = 0, trunk_pool: str = "max"):
        super().__init__()
        self.phase_tied = phase_tied
        self.stem = nn.Conv2d(4, width, 3, padding=1)
        self.blocks = nn.Sequential(*[_ResidualConv(width) for _ in range(layers - 1)])
        self.head = nn.Conv2d(width, 4 * channels, 1)
        # the auxiliary trunk presence head (ModelConfig.trunk_presence_weight)
        self.trunk_presence = nn.Conv2d(width, trunk_outputs, 1) if trunk_outputs else None
        self.trunk_pool = trunk_pool

    def forward(self, images: torch.Tensor, trunk: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The dense motif map (N, C, H, W); with `trunk`, also the trunk presence head's
        pooled logits (N, trunk_outputs)."""
        if trunk and self.trunk_presence is None:
            raise ValueError("this motif model has no trunk presence head")
        trunks: list[torch.Tensor] | None = [] if trunk else None
        dense = (self._half_resolution(images, trunks) if not self.phase_tied
                 else self._all_phases(images, trunks))
        if trunks is None:
            return dense
        return dense, pool_map(torch.cat(trunks, dim=-1), self.trunk_pool)

    def _trunk(self, x: torch.Tensor, trunks: list[torch.Tensor] | None) -> None:
        """Append the trunk presence head's map of trunk features x (N, width, h, w) to
        `trunks`, flattened over space: (N, V, h * w)."""
        if trunks is not None:
            with torch.autocast(x.device.type, enabled=False):
                trunks.append(self.trunk_presence(F.relu(x).float()).flatten(2))

    # On CPU the half-resolution model runs on this many images at a time while training:
    # small batches stay in cache (chunks of 8 beat 32 by ~8%). In eval mode it runs one
    # image at a time, so an image's motif map never depends on the batch it came in
    # (convolution kernels round differently for other batch sizes): the service and the
    # Python API give one image the same values alone or in a batch.
    CPU_CHUNK = 8

    def _all_phases(self, images: torch.Tensor,
                    trunks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The half-resolution model on the four 1-px shifts of the image, each output pixel
        read from the shift that puts it at sub-pixel phase (0, 0): copy (a, b) holds
        original pixel (2i + a, 2j + b) at block (i, j), and the head's phase-(0, 0) rows
        give its value. The shifts run one after another (and on CPU in chunks of
        CPU_CHUNK images): 4x the half-resolution cost, about half of what the same
        function costs as dilated convolutions at full resolution (bench/profile_step.py).
        Equal to `_all_phases_dilated` (tested)."""
        n, _, h, w = images.shape
        padded = F.pad(images * 2 - 1, (0, 1, 0, 1), value=-1.0)  # background beyond the edge
        chunk = (n if images.device.type != "cpu"
                 else self.CPU_CHUNK if self.training else 1)
        weight, bias = self.head.weight[0::4], self.head.bias[0::4]
        parts, chunk_trunks = [], []
        for lo in range(0, n, chunk):
            shifts, shift_trunks = [], ([] if trunks is not None else None)
            for a in (0, 1):
                for b in (0, 1):
                    x = F.pixel_unshuffle(padded[lo:lo + chunk, :, a:a + h, b:b + w], 2)
                    x = self.blocks(self.stem(x))  # (n', width, H/2, W/2)
                    self._trunk(x, shift_trunks)
                    with torch.autocast(x.device.type, enabled=False):  # fp32 head, as below
                        shifts.append(F.conv2d(F.relu(x).float(), weight.float(), bias.float()))
            part = torch.stack(shifts)  # (4, n', C, H/2, W/2), shift index 2a + b
            m, c = part.shape[1], part.shape[2]
            parts.append(part.reshape(2, 2, m, c, h // 2, w // 2)
                         .permute(2, 3, 4, 0, 5, 1).reshape(m, c, h, w))
            if shift_trunks is not None:
                chunk_trunks.append(torch.cat(shift_trunks, dim=-1))
        if trunks is not None:
            trunks.append(torch.cat(chunk_trunks))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def _all_phases_dilated(self, images: torch.Tensor) -> torch.Tensor:
        """The same function as `_all_phases`, computed without copies: a stride-1
        space-to-depth, the same convs dilated by 2 at full resolution, and the head's
        phase-(0, 0) rows. Kept as the reference the shifted-copy form is tested against."""
        n, _, h, w = images.shape
        padded = F.pad(images * 2 - 1, (0, 1, 0, 1), value=-1.0)  # background beyond the edge
        x = torch.cat([padded[:, :, a:a + h, b:b + w] for a in (0, 1) for b in (0, 1)], 1)
        x = F.conv2d(x, self.stem.weight, self.stem.bias, padding=2, dilation=2)  # (N, width, H, W)
        for block in self.blocks:
            x = x + F.conv2d(F.relu(x), block.conv.weight, block.conv.bias, padding=2, dilation=2)
        with torch.autocast(x.device.type, enabled=False):  # fp32 head, as below
            # pixel_shuffle puts head row 4c + 0 at sub-pixel (0, 0) of channel c
            return F.conv2d(F.relu(x).float(), self.head.weight[0::4].float(),
                            self.head.bias[0::4].float())  # (N, C, H, W)

    def _half_resolution(self, images: torch.Tensor,
                         trunks: list[torch.Tensor] | None = None) -> torch.Tensor:
        x = F.pixel_unshuffle(images * 2 - 1, 2)  # (N, 4, H/2, W/2)
        x = self.blocks(self.stem(x))  # (N, width, H/2, W/2); bf16 under autocast
        self._trunk(x, trunks)
        # The last layer runs in fp32 even under autocast: bf16 would quantise the motif
        # values that the quantile threshold has to tell apart.
        with torch.autocast(x.device.type, enabled=False):
            x = self.head(F.relu(x).float())  # (N, 4C, H/2, W/2)
        return F.pixel_shuffle(x, 2)  # (N, C, H, W)


def pool_map(x: torch.Tensor, kind: str) -> torch.Tensor:
    """(N, C, ...) -> (N, C): each channel pooled over the rest by "max", "mean" or
    "max+mean" (their sum)."""
    x = x.float().flatten(2)
    if kind == "max":
        return x.amax(-1)
    if kind == "mean":
        return x.mean(-1)
    if kind == "max+mean":
        return x.amax(-1) + x.mean(-1)
    raise ValueError(f"pool must be one of {PRESENCE_POOLS}, got {kind!r}")


class _SequenceHead(nn.Module):
    """Autoregressive transformer decoder over a memory of tokens: teacher-forced logits."""

    def __init__(self, d_model: int, n_heads: int, layers: int, max_len: int,
                 vocab_size: int = NUM_CLASSES):
        super().__init__()
        dec = nn.TransformerDecoderLayer(d_model, n_heads, 2 * d_model, dropout=0.0,
                                         batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(dec, layers)
        self.token_embedding = nn.Embedding(vocab_size + 2, d_model)  # + end, start
        self.position_embedding = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        self.norm = nn.LayerNorm(d_model)
        self.out = bi.Linear(d_model, vocab_size + 1)  # + end

    def forward(self, memory: torch.Tensor, mask: torch.Tensor | None,
                inputs: torch.Tensor) -> torch.Tensor:
        t = inputs.shape[1]
        x = self.token_embedding(inputs) + self.position_embedding[:t]
        causal = nn.Transformer.generate_square_subsequent_mask(t, device=inputs.device)
        h = self.decoder(x, memory, tgt_mask=causal, memory_key_padding_mask=mask,
                         tgt_is_causal=True)
        return self.out(self.norm(h))


class MotifDecoder(nn.Module):
    """Decoder h: reads the whole sparse motif map as a grid of cell tokens, emits the sequence.

    max-pool by `pool` (keeps every activation's channel and rough place), two small convs
    (the second with stride 2) so a token also knows where in its cell things fire, then
    position features (absolute, and polar around the activation-weighted centroid, which
    is where the answer's cyclic order lives), a transformer encoder over the cells, and an
    autoregressive transformer decoder that cross-attends to them.
    """

    def __init__(self, channels: int, image_size: int, pool: int, max_tokens: int,
                 d_model: int, n_heads: int, encoder_layers: int, decoder_layers: int,
                 max_len: int, vocab_size: int = NUM_CLASSES):
        super().__init__()
        self.pool, self.max_len = pool, max_len
        self.cell_conv = nn.Sequential(
            bi.Conv2d(channels, d_model, 3, padding=1), nn.ReLU(),
            bi.Conv2d(d_model, d_model, 3, stride=2, padding=1),
        )
        self.pos_proj = bi.Linear(15, d_model)
        enc = bi.TransformerEncoderLayer(d_model, n_heads, 2 * d_model, dropout=0.0,
                                         batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(enc, encoder_layers, enable_nested_tensor=False)
        self.head = _SequenceHead(d_model, n_heads, decoder_layers, max_len, vocab_size)

    def encode(self, motifs: torch.Tensor) -> tuple[torch.Tensor, None]:
        """motifs (N, C, H, W) -> memory (N, h * w, d) over the cell grid."""
        pooled = F.max_pool2d(motifs, self.pool)  # (N, C, H/pool, W/pool)
        cells = self.cell_conv(pooled)  # (N, d, h, w)
        n, d, h, w = cells.shape
        # cell centres in [-1, 1]; polar coordinates around the activation mass
        rows = (torch.arange(h, device=cells.device).float() + 0.5) / h * 2 - 1
        cols = (torch.arange(w, device=cells.device).float() + 0.5) / w * 2 - 1
        pos = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), -1).reshape(1, h * w, 2)
        mass = F.adaptive_max_pool2d(pooled.detach().float().sum(1, keepdim=True), (h, w))
        mass = mass.reshape(n, h * w, 1)  # (N, h*w, 1)
        centroid = (mass * pos).sum(1, keepdim=True) / mass.sum(1, keepdim=True).clamp_min(1e-6)
        rel = pos - centroid  # (N, h*w, 2)
        radius = rel.norm(dim=-1, keepdim=True)
        direction = rel / radius.clamp_min(1e-6)
        freqs = math.pi * torch.tensor([1.0, 2.0, 4.0], device=cells.device)
        angles = (pos.expand(n, -1, -1)[..., None] * freqs).flatten(-2)  # (N, h*w, 6)
        features = torch.cat([angles.sin(), angles.cos(), direction, radius], dim=-1)  # 15
        tokens = cells.flatten(2).transpose(1, 2) + self.pos_proj(features)  # (N, h*w, d)
        return self.encoder(tokens), None

    def forward(self, memory: torch.Tensor, mask: torch.Tensor | None,
                inputs: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits: inputs (N, T) token ids starting with BOS -> (N, T, 11)."""
        return self.head(memory, mask, inputs)


def channel_mass_and_place(motifs: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """motifs (N, C, H, W) -> each channel's activation mass (N, C) and mass-weighted mean
    place (N, C, 2) in the coordinates `rows` (H,) and `cols` (W,); 0 for a silent channel."""
    row_mass, col_mass = motifs.sum(3), motifs.sum(2)  # (N, C, H), (N, C, W)
    mass = row_mass.sum(2)  # (N, C)
    safe = mass.clamp_min(1e-12)
    place = torch.stack([(row_mass * rows).sum(2) / safe, (col_mass * cols).sum(2) / safe], -1)
    return mass, place


class ChannelDecoder(nn.Module):
    """Decoder h for point-like motifs: one token per channel, in angular order.

    Each channel is summarised by its activation mass, peak, and mass-weighted place. The
    channels that fire at all are sorted by their angle around the centroid of the firing
    channels (the DigitCircle answer is a cyclic order), and each token gets its cyclic
    rank among them. A transformer encoder over the <= C tokens and an autoregressive
    decoder then only have to name each channel's digit and rotate the cycle. The sort
    is an index operation; the gradient reaches the motif values through mass, peak and
    place. Nothing here sees motif positions from the data: only the sparse map.

    With `cyclic_neighbours`, each token also carries (a projection of) the features of
    the firing channels just before and after it in that cyclic order, so that the digit
    after the previous one is read from the previous one's token in one lookup.
    """

    RANK_HARMONICS = 3

    def __init__(self, channels: int, image_size: int, d_model: int, n_heads: int,
                 encoder_layers: int, decoder_layers: int, max_len: int,
                 vocab_size: int = NUM_CLASSES, cyclic_neighbours: bool = False):
        super().__init__()
        self.channels = channels
        self.cyclic_neighbours = cyclic_neighbours
        if cyclic_neighbours:
            self.before_proj = bi.Linear(d_model, d_model)
            self.after_proj = bi.Linear(d_model, d_model)
        coords = (torch.arange(image_size).float() + 0.5) / image_size * 2 - 1
        self.register_buffer("coords", coords, persistent=False)
        self.channel_embedding = nn.Parameter(torch.randn(channels, d_model) * 0.02)
        self.features = nn.Sequential(bi.Linear(10, d_model), nn.ReLU(),
                                      bi.Linear(d_model, d_model))
        self.rank_proj = bi.Linear(2 * self.RANK_HARMONICS, d_model)
        enc = bi.TransformerEncoderLayer(d_model, n_heads, 2 * d_model, dropout=0.0,
                                         batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(enc, encoder_layers, enable_nested_tensor=False)
        self.head = _SequenceHead(d_model, n_heads, decoder_layers, max_len, vocab_size)

    def summarise(self, motifs: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """motifs (N, C, H, W) -> per-channel features (N, C, 10), the angular order of the
        channels (N, C) (firing ones by angle, then the silent ones) and which fire (N, C)."""
        m = motifs.float()
        mass, place = channel_mass_and_place(m, self.coords, self.coords)  # (N, C), (N, C, 2)
        present = mass > 0
        share = mass / mass.amax(1, keepdim=True).clamp_min(1e-12)  # (N, C) in [0, 1]
        centroid = ((share[..., None] * place).sum(1, keepdim=True)
                    / share.sum(1)[:, None, None].clamp_min(1e-12))
        rel = place - centroid
        radius = rel.norm(dim=-1, keepdim=True)
        direction = rel / radius.clamp_min(1e-3)
        count = present.sum(1).clamp_min(1).float()  # (N,)
        features = torch.cat([
            torch.log1p(mass)[..., None], torch.log1p(m.amax(dim=(2, 3)))[..., None],
            share[..., None], present.float()[..., None], place, direction, radius,
            (count / self.channels)[:, None, None].expand_as(radius),
        ], -1)
        # angle from the row axis towards the column axis: the label's increasing angle
        angle = torch.atan2(rel[..., 1], rel[..., 0]).detach()
        order = torch.where(present, angle, torch.full_like(angle, 10.0)).argsort(1)
        return features, order, present

    def encode(self, motifs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """motifs (N, C, H, W) -> memory (N, C, d) in angular order, key padding mask."""
        return self.encode_summary(*self.summarise(motifs))

    def encode_summary(self, features: torch.Tensor, order: torch.Tensor,
                       present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`summarise`'s output -> memory (N, C, d) in angular order, key padding mask."""
        tokens = self.features(features) + self.channel_embedding  # (N, C, d)
        tokens = tokens.gather(1, order[..., None].expand_as(tokens))
        count = present.sum(1).clamp_min(1).float()
        rank = torch.arange(self.channels, device=features.device).float() / count[:, None]
        harmonics = (2 * math.pi * rank)[..., None] * torch.arange(
            1, self.RANK_HARMONICS + 1, device=features.device)
        ranks = self.rank_proj(torch.cat([harmonics.cos(), harmonics.sin()], -1))
        if self.cyclic_neighbours:
            tokens = tokens + self._neighbours(tokens, present.sum(1))
        tokens = tokens + ranks
        mask = ~present.gather(1, order)
        mask[:, 0] = False  # an empty map still leaves one key to attend to
        return self.encoder(tokens, src_key_padding_mask=mask), mask

    def _neighbours(self, tokens: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """tokens (N, C, d) in angular order, the first count (N,) of them firing -> the
        projected features of each firing token's cyclic predecessor and successor among
        the firing ones (N, C, d); zero for the silent ones."""
        c = tokens.shape[1]
        slot = torch.arange(c, device=tokens.device)[None].expand(tokens.shape[0], c)
        n = count[:, None].clamp_min(1)
        firing = slot < count[:, None]
        before = torch.where(firing, (slot - 1) % n, slot)
        after = torch.where(firing, (slot + 1) % n, slot)
        pick = lambda idx: tokens.gather(1, idx[..., None].expand_as(tokens))  # noqa: E731
        both = self.before_proj(pick(before)) + self.after_proj(pick(after))
        return both * firing[..., None]

    def forward(self, memory: torch.Tensor, mask: torch.Tensor | None,
                inputs: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits: inputs (N, T) token ids starting with BOS -> (N, T, 11)."""
        return self.head(memory, mask, inputs)


class _RelativeLayer(nn.Module):
    """Pre-norm self-attention whose logits get a learned per-head bias from each pair's
    relative features, then a feed-forward block."""

    def __init__(self, d_model: int, n_heads: int, rel_features: int):
        super().__init__()
        self.heads = n_heads
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv, self.proj = bi.Linear(d_model, 3 * d_model), bi.Linear(d_model, d_model)
        self.bias = nn.Sequential(bi.Linear(rel_features, 64), nn.ReLU(), bi.Linear(64, n_heads))
        self.ff = nn.Sequential(bi.Linear(d_model, 2 * d_model), nn.ReLU(),
                                bi.Linear(2 * d_model, d_model))

    def forward(self, x: torch.Tensor, rel: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, k, d = x.shape
        q, key, v = self.qkv(self.norm1(x)).view(n, k, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        logits = q @ key.transpose(-1, -2) / q.shape[-1] ** 0.5  # (N, heads, k, k)
        logits = logits + self.bias(rel).permute(0, 3, 1, 2).to(logits.dtype)
        logits = logits.masked_fill(mask[:, None, None, :], float("-inf"))
        x = x + self.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(n, k, d))
        return x + self.ff(self.norm2(x))


class RelativePointEncoder(nn.Module):
    """A set encoder over point tokens whose attention sees where each point is from each
    other one: the displacement (row and column offsets, in image fractions), its length,
    and sines and cosines of the offsets at `scales` octaves (wavelengths from 2 image
    sizes down to a few pixels). Generic: translation-equivariant, no order, no domain
    rule. A masked key (a padding point) is never attended to; the caller keeps at least
    one key unmasked per set (PointDecoder.point_tokens does)."""

    def __init__(self, d_model: int, n_heads: int, layers: int, scales: int = 6):
        super().__init__()
        self.register_buffer("frequencies", 2.0 ** torch.arange(scales) * math.pi)
        features = 3 + 4 * scales
        self.layers = nn.ModuleList(_RelativeLayer(d_model, n_heads, features)
                                    for _ in range(layers))

    def relative(self, place: torch.Tensor) -> torch.Tensor:
        """places (N, k, 2) -> pair features (N, k, k, 3 + 4 * scales), [i, j] for j - i."""
        delta = place[:, None, :, :] - place[:, :, None, :]
        angles = delta[..., None] * self.frequencies
        return torch.cat([delta, delta.norm(dim=-1, keepdim=True),
                          angles.sin().flatten(-2), angles.cos().flatten(-2)], -1)

    def forward(self, tokens: torch.Tensor, place: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        rel = self.relative(place.float())
        for layer in self.layers:
            tokens = layer(tokens, rel, mask)
        return tokens


class PointDecoder(nn.Module):
    """The generic decoder h: reads the sparse map as what it is, a small set of points.

    The `max_points` strongest activations of the map (over all channels and places) become
    one token each: a learned embedding of the channel, the activation value (log1p) and
    random Fourier features of the place (row / H, col / W). Zero entries (at extreme
    sparsity most of the `max_points`) are masked. A transformer encoder over the unordered
    set (no positional encoding: the set has no order) and an autoregressive transformer
    decoder emit the label. It knows the vocabulary, the maximum length, the number of
    channels and the image shape, and nothing of how a domain builds its labels. The
    top-k selection is an index operation; the gradient reaches the motif values through
    the value feature.
    """

    def __init__(self, channels: int, image_shape: tuple[int, int], max_points: int,
                 fourier_features: int, d_model: int, n_heads: int, encoder_layers: int,
                 decoder_layers: int, max_len: int, vocab_size: int,
                 channel_summaries: bool = False, point_encoder: str = "set"):
        super().__init__()
        if point_encoder not in POINT_ENCODERS:
            raise ValueError(f"point_encoder must be one of {POINT_ENCODERS}, "
                             f"got {point_encoder!r}")
        self.channels, self.max_points = channels, max_points
        self.image_shape = tuple(image_shape)
        # fixed random frequencies (a buffer, saved with the weights): wavelengths from
        # about the whole image down to a few pixels
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("frequencies",
                             torch.randn(2, fourier_features, generator=generator) * 4.0)
        self.channel_embedding = nn.Parameter(torch.randn(channels, d_model) * 0.02)
        self.features = nn.Sequential(bi.Linear(2 * fourier_features + 3, d_model), nn.ReLU(),
                                      bi.Linear(d_model, d_model))
        self.summaries = (nn.Sequential(bi.Linear(2 * fourier_features + 5, d_model), nn.ReLU(),
                                        bi.Linear(d_model, d_model))
                          if channel_summaries else None)
        self.relative = point_encoder == "relative"
        if self.relative:
            self.encoder = RelativePointEncoder(d_model, n_heads, encoder_layers)
        else:
            enc = bi.TransformerEncoderLayer(d_model, n_heads, 2 * d_model, dropout=0.0,
                                             batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(enc, encoder_layers, enable_nested_tensor=False)
        self.head = _SequenceHead(d_model, n_heads, decoder_layers, max_len, vocab_size)

    def _fourier(self, place: torch.Tensor) -> torch.Tensor:
        """(..., 2) places in [0, 1] -> (..., 2F) sin and cos of the random frequencies."""
        angles = bi.matmul(2 * math.pi * place, self.frequencies)
        return torch.cat([angles.sin(), angles.cos()], -1)

    def channel_tokens(self, motifs: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """motifs (N, C, H, W) -> one summary token per channel (N, C, d), which channels
        fire (N, C) and their mass-weighted mean places (N, C, 2): a token holds log1p of
        the mass and the peak, that place (Fourier features and raw), and the firing flag."""
        n, c, h, w = motifs.shape
        m = motifs.float().clamp_min(0)
        rows = (torch.arange(h, device=m.device, dtype=m.dtype) + 0.5) / h
        cols = (torch.arange(w, device=m.device, dtype=m.dtype) + 0.5) / w
        mass, place = channel_mass_and_place(m, rows, cols)  # (N, C), (N, C, 2)
        present = mass > 0
        features = torch.cat([self._fourier(place), place, torch.log1p(mass)[..., None],
                              torch.log1p(m.amax(dim=(2, 3)))[..., None],
                              present.float()[..., None]], -1)
        return self.summaries(features) + self.channel_embedding, present, place

    def points(self, motifs: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """motifs (N, C, H, W) -> the strongest k = min(max_points, C*H*W) entries:
        values (N, k), channels (N, k), places (N, k, 2) as (row, col) in [0, 1], and
        which are active (N, k)."""
        n, c, h, w = motifs.shape
        flat = motifs.float().reshape(n, c * h * w)
        values, index = flat.topk(min(self.max_points, c * h * w), dim=1)  # (N, k)
        channel = index // (h * w)
        row = (index % (h * w)) // w
        col = index % w
        place = torch.stack([(row.float() + 0.5) / h, (col.float() + 0.5) / w], -1)
        return values, channel, place, values > 0

    def point_tokens(self, values: torch.Tensor, channel: torch.Tensor, place: torch.Tensor,
                     active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`points`' output -> one token per point (N, k, d) and the key padding mask (N, k)."""
        features = torch.cat([self._fourier(place), place,
                              torch.log1p(values.clamp_min(0))[..., None]], -1)
        tokens = self.features(features) + self.channel_embedding[channel]  # (N, k, d)
        mask = ~active
        mask[:, 0] = False  # an empty map still leaves one key to attend to
        return tokens, mask

    def encode(self, motifs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """motifs (N, C, H, W) -> memory (N, k, d), key padding mask (N, k)."""
        points = self.points(motifs)
        tokens, mask = self.point_tokens(*points)
        place = points[2]
        if self.summaries is not None:  # + one token per firing channel
            summary, present, summary_place = self.channel_tokens(motifs)
            tokens, mask = torch.cat([tokens, summary], 1), torch.cat([mask, ~present], 1)
            place = torch.cat([place, summary_place.to(place.dtype)], 1)
        return self.encode_tokens(tokens, place, mask), mask

    def encode_tokens(self, tokens: torch.Tensor, place: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
        """The encoder over tokens (N, k, d) at places (N, k, 2) with key padding mask."""
        if self.relative:
            return self.encoder(tokens, place, mask)
        return self.encoder(tokens, src_key_padding_mask=mask)

    def forward(self, memory: torch.Tensor, mask: torch.Tensor | None,
                inputs: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits: inputs (N, T) token ids starting with BOS -> (N, T, V + 1)."""
        return self.head(memory, mask, inputs)


@dataclass
class ModelOutput:
    motifs: torch.Tensor  # (N, C, H, W) the sparse motif map
    logits: torch.Tensor | None  # (N, T, 11) teacher-forced, when targets were given
    penalty: torch.Tensor  # the bottleneck's extra loss term (0 for MT / ST / TopK)
    presence_logits: torch.Tensor | None = None  # (N, 10) which digits the answer contains
    # (N, V) the same, from the trunk presence head (when trunk_presence_weight > 0)
    trunk_presence_logits: torch.Tensor | None = None


@dataclass
class Decoded:
    sequences: list[list[int]]  # decoded digits, without end token
    probabilities: list[list[float]]  # the probability of each emitted token, end included
    motifs: torch.Tensor  # (N, C, H, W)


def presence_targets(labels: list[list[int]], vocab_size: int = NUM_CLASSES) -> torch.Tensor:
    """(N, vocab_size) multi-hot: which tokens each answer contains."""
    targets = torch.zeros(len(labels), vocab_size)
    for i, label in enumerate(labels):
        targets[i, label] = 1.0
    return targets


def encode_labels(labels: list[list[int]], max_digits: int, vocab_size: int = NUM_CLASSES
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists -> (decoder inputs (N, T), targets (N, T)) with T = max_digits + 1;
    the end token is vocab_size, the start token vocab_size + 1."""
    t = max_digits + 1
    eos, bos = vocab_size, vocab_size + 1
    inputs = torch.full((len(labels), t), eos, dtype=torch.long)
    targets = torch.full((len(labels), t), IGNORE, dtype=torch.long)
    for i, label in enumerate(labels):
        if len(label) > max_digits or any(not 0 <= d < vocab_size for d in label):
            raise ValueError(
                f"label {label} is not <= {max_digits} tokens in 0..{vocab_size - 1}")
        inputs[i, 0] = bos
        inputs[i, 1 : len(label) + 1] = torch.tensor(label, dtype=torch.long)
        targets[i, : len(label)] = torch.tensor(label, dtype=torch.long)
        targets[i, len(label)] = eos
    return inputs, targets


class SparlingModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.motif_model = MotifModel(
            config.motif_channels, config.motif_width, config.motif_layers, config.phase_tied,
            trunk_outputs=config.vocab_size if config.trunk_presence_weight > 0 else 0,
            trunk_pool=config.presence_pool)
        self.bottleneck: SparsityLayer = make_sparsity_layer(
            config.sparsity, config.motif_channels, 1 - config.initial_density,
            batch_norm=config.batch_norm, penalty_weight=config.penalty_weight,
            accumulate_survivors=config.accumulate_survivors,
        )
        self.decoder: PointDecoder | ChannelDecoder | MotifDecoder
        max_len, vocab = config.max_digits + 1, config.vocab_size
        if config.decoder == "points":
            self.decoder = PointDecoder(
                config.motif_channels, config.image_shape,
                config.max_points, config.fourier_features, config.d_model, config.n_heads,
                config.encoder_layers, config.decoder_layers, max_len, vocab,
                channel_summaries=config.channel_summaries, point_encoder=config.point_encoder)
        elif config.decoder == "channels":
            self.decoder = ChannelDecoder(
                config.motif_channels, config.image_size, config.d_model, config.n_heads,
                config.encoder_layers, config.decoder_layers, max_len, vocab,
                cyclic_neighbours=config.cyclic_neighbours)
        else:
            self.decoder = MotifDecoder(
                config.motif_channels, config.image_size, config.pool, 0,
                config.d_model, config.n_heads, config.encoder_layers, config.decoder_layers,
                max_len, vocab)
        self.presence = nn.Linear(config.motif_channels, vocab)

    def sparse_motifs(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 1, H, W) in [0, 1] -> the sparse motif map (N, C, H, W)."""
        self._check_images(images)
        logits = self.motif_model(images)
        with torch.autocast(images.device.type, enabled=False):  # thresholds in fp32
            return self.bottleneck(logits.float())

    def forward(self, images: torch.Tensor, inputs: torch.Tensor | None = None) -> ModelOutput:
        self._check_images(images)
        trunk = None
        if inputs is not None and self.motif_model.trunk_presence is not None:
            dense, trunk = self.motif_model(images, trunk=True)
        else:
            dense = self.motif_model(images)  # (N, C, H, W) before the bottleneck
        with torch.autocast(images.device.type, enabled=False):
            motifs = self.bottleneck(dense.float())
        logits = None
        if inputs is not None:
            with torch.autocast(images.device.type, enabled=False):  # small; fp32
                memory, mask = self.decoder.encode(motifs)
                logits = self.decoder(memory, mask, inputs)
                # read before the bottleneck: a signal for the motif model at any density
                presence = self.presence_logits(dense)  # (N, V)
        return ModelOutput(motifs, logits, self.bottleneck.penalty(motifs),
                           presence if inputs is not None else None, trunk)

    def presence_logits(self, dense: torch.Tensor) -> torch.Tensor:
        """The dense map before the bottleneck (N, C, H, W) -> presence logits (N, V): each
        channel pooled over the image (`presence_pool`), then the linear presence head."""
        return self.presence(pool_map(dense, self.config.presence_pool))

    @torch.no_grad()
    def decode_motifs(self, motifs: torch.Tensor, stop_early: bool = True,
                      batch_invariant: bool = False
                      ) -> tuple[list[list[int]], list[list[float]]]:
        """Greedy decoding of a (possibly edited) sparse motif map: the decoder alone.
        With `stop_early` it stops once every map has emitted the end token: the steps that
        do run compute what they compute in a full run, so each map's answer is the same bit
        for bit, and a batch of short labels skips the longest (most costly) steps
        (`bench/decode.py` times both).

        `batch_invariant`: each map's answer is the same bit for bit whatever else is in
        the batch (`models.batch_invariant`: per-sample products, and the greedy steps with
        cached keys and values). It equals the default path up to float rounding; the
        service decodes this way so that batched requests get their lone answers."""
        n = motifs.shape[0]
        if batch_invariant:
            with bi.batch_invariant():
                memory, mask = self.decoder.encode(motifs)
                steps = bi.IncrementalDecoder(self.decoder.head, memory, mask)
                logits = lambda tokens: steps.step(tokens[:, -1])  # noqa: E731
                return self._greedy(logits, n, motifs.device, stop_early)
        memory, mask = self.decoder.encode(motifs)
        return self._greedy(lambda tokens: self.decoder(memory, mask, tokens)[:, -1],
                            n, motifs.device, stop_early)

    def _greedy(self, logits: Callable[[torch.Tensor], torch.Tensor], n: int,
                device: torch.device, stop_early: bool
                ) -> tuple[list[list[int]], list[list[float]]]:
        """The greedy loop over `logits(tokens so far (N, T)) -> next-token logits (N, V+1)`."""
        eos = self.config.eos
        tokens = torch.full((n, 1), self.config.bos, dtype=torch.long, device=device)
        ended = torch.zeros(n, dtype=torch.bool, device=device)
        probs = []
        for _ in range(self.config.max_digits + 1):
            if stop_early and bool(ended.all()):
                break
            p = logits(tokens).float().softmax(-1)  # (N, V + 1)
            if tokens.shape[1] <= self.config.min_length:  # too short to end here
                p[:, eos] = 0
                p = p / p.sum(-1, keepdim=True)
            best = p.argmax(-1)
            probs.append(p.gather(1, best[:, None])[:, 0])
            tokens = torch.cat([tokens, best[:, None]], dim=1)
            ended |= best == eos
        sequences, confidences = [], []
        for i in range(n):
            seq, conf = [], []
            for j, tok in enumerate(tokens[i, 1:].tolist()):
                conf.append(float(probs[j][i]))
                if tok == eos:
                    break
                seq.append(tok)
            sequences.append(seq)
            confidences.append(conf)
        return sequences, confidences

    @torch.no_grad()
    def generate(self, images: torch.Tensor) -> Decoded:
        motifs = self.sparse_motifs(images)
        sequences, probabilities = self.decode_motifs(motifs)
        return Decoded(sequences, probabilities, motifs)

    def _check_images(self, images: torch.Tensor) -> None:
        h, w = self.config.image_shape
        if images.dim() != 4 or images.shape[1:] != (1, h, w):
            raise ValueError(
                f"expected images of shape (N, 1, {h}, {w}), got {tuple(images.shape)}")

    def set_density(self, density: float) -> None:
        self.bottleneck.set_density(density)

    def dominant_phases(self, images: torch.Tensor, batch_size: int = 100) -> list[int]:
        """Per channel, the sub-pixel phase 2 * (row % 2) + (col % 2) of the pixels where
        most of its sparse activations on `images` lie (in eval mode; 0 for a channel that
        never fires). An untied motif model is free to put each channel's activations at
        one phase of its own, and it does: in checkpoints/digit-circle-mt-fast-untied-long-s1
        every channel fires at one phase only, and never at (0, 0)."""
        counts = torch.zeros(self.config.motif_channels, 4, dtype=torch.long)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                for i in range(0, len(images), batch_size):
                    active = self.bottleneck.active(self.sparse_motifs(images[i:i + batch_size]))
                    for a in (0, 1):
                        for b in (0, 1):
                            counts[:, 2 * a + b] += active[:, :, a::2, b::2].sum(
                                dim=(0, 2, 3)).cpu()
        finally:
            self.train(was_training)
        return counts.argmax(dim=1).tolist()  # ties (no activations): phase 0

    def tie_phases(self, phases: list[int] | None = None) -> torch.Tensor | None:
        """Make an untied motif model phase-tied in place: from now on every output pixel
        is the half-resolution model's answer at one sub-pixel phase (MotifModel._all_phases
        reads the head's rows 4c), the other rows go unused, and the config (what a
        checkpoint records) says so. No weight changes shape, so a saved state loads
        either way; a tied model is left as it is.

        `phases` (one per channel, as `dominant_phases` gives) first swaps each channel's
        head row of that phase into row 4c, so that the tied model answers with the phase
        the untied one had learned to use (its map then moves by at most 1 px); without it
        phase (0, 0) answers, which an untied model may never have trained to fire.
        Returns the permutation of the head's rows that was applied (None if none), for
        the caller to apply to any optimizer state of the head."""
        perm = None
        if phases is not None and not self.motif_model.phase_tied:
            channels = self.config.motif_channels
            if len(phases) != channels or not all(0 <= k < 4 for k in phases):
                raise ValueError(f"phases must be {channels} values in 0..3, got {phases}")
            perm = torch.arange(4 * channels)
            for c, k in enumerate(phases):
                perm[4 * c], perm[4 * c + k] = 4 * c + k, 4 * c
            head = self.motif_model.head
            with torch.no_grad():
                head.weight.copy_(head.weight[perm.to(head.weight.device)])
                head.bias.copy_(head.bias[perm.to(head.bias.device)])
        self.motif_model.phase_tied = True
        if not self.config.phase_tied:
            self.config = replace(self.config, phase_tied=True)
        return perm

    @property
    def density(self) -> float:
        return self.bottleneck.density

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
