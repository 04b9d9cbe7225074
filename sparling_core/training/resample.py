"""Duplicate-channel resampling: give a channel that copies another a fresh start.

Under a hard per-channel quantile threshold, two channels can settle on the same motif
(two detectors of 6, say) while another motif gets none: the silent motif's pixels are
below every threshold, so no gradient reaches them through the sparse map, and the
duplicate stays put because the decoder has learned to read it. This module finds such
pairs from the model's own sparse maps on unlabelled images (no motif positions are
used) and re-initialises one channel of each pair, much like dead-neuron resampling in
sparse autoencoders:

- two channels are duplicates when, in both directions, at least `threshold` of one
  channel's active pixels have an active pixel of the other within `radius` pixels in
  the same image (`cofiring`);
- a duplicate is only worth a fresh start while some motif is unexplained: the digit
  whose presence in the answer the presence head predicts worst (`presence_errors`, the
  per-digit cross-entropy on labelled validation images; labels only, no positions);
- a channel that duplicates nobody can be just as lost: it fires on noise, or hardly at
  all, and so explains no token (`channel_selectivity`: the best AUC, over tokens, of the
  channel's strongest sparse activation in an image as a predictor of that token's
  presence in the label; about 0.5 for such a channel, near 1 for a channel on one digit;
  labels only; tokens seen in fewer than 5 images, or missing from fewer, are not scored).
  `find_unselective` names the channels below a minimum, which the trainer
  resamples like duplicates when asked to (`TrainConfig.resample_unselective`);
- the channel with fewer activations is resampled (`resample_channels`): its rows of the
  motif model's last conv get a fresh default initialisation, its BatchNorm statistics
  and affine parameters are reset, its threshold starts at the median of the others, its
  decoder embedding is re-drawn, Adam's moments for all of those entries are reset, and
  its column of the presence head is cleared except for a positive weight on the
  unexplained digit. The presence head pools each channel (its maximum by default) *before* the
  bottleneck, so that weight gives the fresh channel a dense, label-only learning signal
  (multiple-instance learning: fire somewhere exactly when that digit is in the answer)
  that does not depend on where its few surviving activations happen to land. Without
  it, a fresh channel tends to drift back to the motif it duplicated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn

from ..models.sparling import MotifDecoder, SparlingModel, presence_targets

__all__ = [
    "channel_peaks", "channel_selectivity", "cofiring", "detector_coverage", "find_duplicates",
    "find_unselective", "presence_errors", "resample_channels", "resample_summary",
    "selectivity", "sparse_activity", "uncovered_tokens",
]

# `keep` in a resample row (resampled channel, keep, digit): the channel it duplicated, or
FAILED = -1  # a fresh channel that did not learn its digit (drawn again)
UNSELECTIVE = -2  # a channel that duplicated nobody but explained no token


@torch.no_grad()
def sparse_activity(model: SparlingModel, images: torch.Tensor,
                    batch_size: int = 250) -> torch.Tensor:
    """(N, C, H, W) boolean: where the sparse motif map is active, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model.bottleneck.active(model.sparse_motifs(images[i:i + batch_size]))
                          for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)


@torch.no_grad()
def cofiring(active: torch.Tensor, radius: int = 4, batch_size: int = 100) -> torch.Tensor:
    """active (N, C, H, W) bool -> (C, C): entry [a, b] is the fraction of channel a's
    active pixels that have an active pixel of channel b within `radius` pixels
    (Chebyshev distance) in the same image. Rows of silent channels are 0."""
    if active.dim() != 4:
        raise ValueError(f"expected (N, C, H, W), got shape {tuple(active.shape)}")
    if radius < 0:
        raise ValueError("radius must be >= 0")
    c = active.shape[1]
    hits = torch.zeros(c, c, dtype=torch.float64, device=active.device)
    for start in range(0, active.shape[0], batch_size):
        a = active[start:start + batch_size].float()
        near = F.max_pool2d(a, 2 * radius + 1, stride=1, padding=radius)
        hits += torch.einsum("nahw,nbhw->ab", a, near).double()
    counts = active.sum(dim=(0, 2, 3)).double()  # (C,)
    return (hits / counts.clamp_min(1)[:, None]).float()


@torch.no_grad()
def presence_errors(model: SparlingModel, images: torch.Tensor, labels: list[list[int]],
                    batch_size: int = 250) -> torch.Tensor:
    """(V,) per token: the presence head's mean binary cross-entropy (nats) on these
    labelled images, in eval mode. About ln 2 = 0.69 for a digit no channel explains."""
    was_training = model.training
    model.eval()
    try:
        logits = torch.cat([
            model.presence_logits(model.motif_model(images[i:i + batch_size]))
            for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)
    return F.binary_cross_entropy_with_logits(
        logits, presence_targets(labels, model.presence.out_features).to(logits.device),
        reduction="none").mean(0)


def _aucs(scores: torch.Tensor, targets: torch.Tensor, min_count: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, V') ROC AUCs of each column of `scores` (N, C) for the presence of each usable
    token of `targets` (N, V), and the (V,) mask of usable tokens: present in at least
    `min_count` images and absent from at least `min_count` (an AUC from a couple of images
    is noise). Ties count half, as in the Mann-Whitney U statistic."""
    if scores.dim() != 2 or targets.dim() != 2 or scores.shape[0] != targets.shape[0]:
        raise ValueError(f"scores (N, C) and targets (N, V) must share N, got "
                         f"{tuple(scores.shape)} and {tuple(targets.shape)}")
    s = scores.double().cpu()
    t = targets.double().cpu()
    n = s.shape[0]
    positives = t.sum(0)  # (V,)
    usable = (positives >= min_count) & (n - positives >= min_count)
    if not bool(usable.any()):
        return torch.empty(s.shape[1], 0, dtype=torch.float64), usable
    t, positives = t[:, usable], positives[usable]
    negatives = n - positives
    # average ranks per column (1-based), ties sharing the mean of their ranks
    ranks = torch.from_numpy(rankdata(s.numpy(), method="average", axis=0))
    rank_sums = ranks.T @ t  # (C, V'): the positives' rank sums
    return (rank_sums - positives * (positives + 1) / 2) / (positives * negatives), usable


def selectivity(scores: torch.Tensor, targets: torch.Tensor, min_count: int = 5
                ) -> torch.Tensor:
    """scores (N, C), targets (N, V) in {0, 1} -> (C,): per column of `scores`, the largest
    over tokens of max(AUC, 1 - AUC), with AUC the ROC AUC of that score for the token's
    presence (ties count half, as in the Mann-Whitney U statistic): 1 for a score that
    separates some token's images from the others (firing with it or without it), 0.5 for
    one that separates none. Only tokens present in at least `min_count` images and absent
    from at least `min_count` are scored (an AUC from a couple of images is noise); NaN
    ("unknown") where no token qualifies. A constant score (a silent channel) gives 0.5."""
    auc, usable = _aucs(scores, targets, min_count)
    if not bool(usable.any()):
        return torch.full((scores.shape[1],), float("nan"))
    return torch.maximum(auc, 1 - auc).max(dim=1).values.float()


def detector_coverage(peaks: torch.Tensor, targets: torch.Tensor, min_count: int = 5
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """peaks (N, C): each image's strongest sparse activation per channel; targets (N, V)
    in {0, 1}: which tokens its label holds -> ((V,) coverage, (V,) best channel). A token's
    coverage is the best, over channels, ROC AUC of the channel's peak for the token's
    presence: about 1 when some channel fires on images with the token and stays silent on
    the others (the token has a detector in the sparse map), about 0.5 when none does. Only
    firing *with* the token counts (a channel silent on it is no detector of it). Labels only,
    no motif positions. NaN coverage and best channel -1 for tokens present in fewer than
    `min_count` images or absent from fewer."""
    v = targets.shape[1]
    coverage = torch.full((v,), float("nan"))
    best = torch.full((v,), -1, dtype=torch.long)
    auc, usable = _aucs(peaks, targets, min_count)
    if bool(usable.any()):
        values, channels = auc.max(dim=0)
        coverage[usable] = values.float()
        best[usable] = channels
    return coverage, best


def uncovered_tokens(coverage: torch.Tensor, minimum: float) -> list[int]:
    """Tokens whose `detector_coverage` is below `minimum`, least covered first (unknown,
    NaN, coverage never)."""
    return [v for v in coverage.argsort().tolist() if float(coverage[v]) < minimum]


@torch.no_grad()
def channel_peaks(model: SparlingModel, images: torch.Tensor, batch_size: int = 250
                  ) -> torch.Tensor:
    """(N, C): each image's strongest sparse activation per channel, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model.sparse_motifs(images[i:i + batch_size]).float().amax(dim=(2, 3))
                          for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)


def channel_selectivity(model: SparlingModel, images: torch.Tensor, labels: list[list[int]],
                        batch_size: int = 250) -> torch.Tensor:
    """(C,) per channel: `selectivity` of its strongest sparse activation in each image
    against the presence of each token in the label, in eval mode, on these labelled
    images. Near 1 for a channel that fires on one kind of motif; about 0.5 for one that
    fires on noise or not at all."""
    return selectivity(channel_peaks(model, images, batch_size),
                       presence_targets(labels, model.presence.out_features))


def find_unselective(scores: torch.Tensor, minimum: float,
                     exclude: frozenset[int] | set[int] = frozenset()) -> list[int]:
    """Channels whose selectivity (`channel_selectivity`) is below `minimum`, least
    selective first; `exclude`d channels (say, fresh ones still learning) and unknown (NaN)
    scores never."""
    return [c for c in scores.argsort().tolist()
            if float(scores[c]) < minimum and c not in exclude]  # NaN < x is False


def find_duplicates(active: torch.Tensor, radius: int = 4, threshold: float = 0.5,
                    min_active: int = 10, exclude: frozenset[int] | set[int] = frozenset()
                    ) -> list[tuple[int, int]]:
    """Pairs (channel to resample, channel it duplicates), strongest overlap first.

    A pair counts when both channels have at least `min_active` activations and each
    direction of `cofiring` is >= `threshold`; the channel with fewer activations is the
    one to resample. A channel appears in at most one pair; `exclude`d channels (say,
    fresh ones still learning) in none."""
    if not 0 < threshold <= 1:
        raise ValueError("threshold must be in (0, 1]")
    co = cofiring(active, radius)
    counts = active.sum(dim=(0, 2, 3))
    c = co.shape[0]
    candidates = []
    for a in range(c):
        for b in range(a + 1, c):
            if a in exclude or b in exclude:
                continue
            overlap = float(min(co[a, b], co[b, a]))
            if overlap >= threshold and min(counts[a], counts[b]) >= min_active:
                drop, keep = (a, b) if counts[a] < counts[b] else (b, a)
                candidates.append((overlap, drop, keep))
    pairs, used = [], set()
    for _, drop, keep in sorted(candidates, reverse=True):
        if drop not in used and keep not in used:
            pairs.append((drop, keep))
            used.update((drop, keep))
    return pairs


def _reset_moments(optimizer: torch.optim.Optimizer | None, param: torch.Tensor,
                   index) -> None:
    """Forget Adam's first moment for `param[index]`, and give it the second moment of the
    entries that stay: zeroing that too would make Adam's first steps on the fresh entries
    several times the learning rate (its bias correction assumes a fresh start)."""
    if optimizer is None:
        return
    state = optimizer.state.get(param, {})
    avg, avg_sq = state.get("exp_avg"), state.get("exp_avg_sq")
    if avg is None or avg_sq is None:
        return
    avg[index] = 0
    keep = torch.ones_like(avg_sq, dtype=torch.bool)
    keep[index] = False
    avg_sq[index] = avg_sq[keep].mean() if keep.any() else 0


@torch.no_grad()
def resample_channels(model: SparlingModel, channels: list[int],
                      optimizer: torch.optim.Optimizer | None = None,
                      targets: list[int] | None = None, target_weight: float = 1.0,
                      aim: bool = False) -> None:
    """Re-initialise `channels` of the sparse map (see the module docstring); channel
    `channels[i]` gets presence weight `target_weight` on digit `targets[i]`.

    aim=True (needs `targets` and a motif model with a trunk presence head): instead of a
    random draw, the fresh channel's head rows (all four sub-pixel phases) start as the
    trunk presence head's row for its digit. That head is a 1x1 conv on the same trunk
    features the motif head reads, trained to light up wherever the digit is, so the fresh
    channel fires at the digit's sites from its first step instead of having to find them."""
    c = model.config.motif_channels
    if not channels:
        return
    if any(not 0 <= ch < c for ch in channels):
        raise ValueError(f"channels must be in 0..{c - 1}, got {channels}")
    if targets is not None and (len(targets) != len(channels) or any(
            not 0 <= t < model.presence.out_features for t in targets)):
        raise ValueError(f"targets must give one digit per channel, got {targets}")
    # The motif head emits 4 sub-pixel rows per channel (pixel_shuffle by 2): ch*4 .. ch*4+3.
    head: nn.Conv2d = model.motif_model.head
    rows = torch.tensor([4 * ch + k for ch in channels for k in range(4)])
    trunk: nn.Conv2d | None = model.motif_model.trunk_presence
    if aim and (targets is None or trunk is None):
        raise ValueError("aim needs targets and a motif model with a trunk presence head "
                         "(trunk_presence_weight > 0)")
    if aim:
        digits = torch.tensor([d for d in targets for _ in range(4)])
        head.weight[rows] = trunk.weight[digits].to(head.weight)
        head.bias[rows] = trunk.bias[digits].to(head.bias)
    else:
        fresh = nn.Conv2d(head.in_channels, head.out_channels, head.kernel_size)
        head.weight[rows] = fresh.weight[rows].to(head.weight)
        head.bias[rows] = fresh.bias[rows].to(head.bias)
    _reset_moments(optimizer, head.weight, rows)
    _reset_moments(optimizer, head.bias, rows)

    index = torch.tensor(channels)
    bottleneck = model.bottleneck
    bn = getattr(bottleneck, "batch_norm", None)
    if bn is not None:
        bn.running_mean[index] = 0.0
        bn.running_var[index] = 1.0
        if bn.affine:
            bn.weight[index] = 1.0
            bn.bias[index] = 0.0
            _reset_moments(optimizer, bn.weight, index)
            _reset_moments(optimizer, bn.bias, index)
    thresholds = getattr(bottleneck, "thresholds", None)
    if thresholds is not None and thresholds.numel() == c:
        keep = torch.tensor([k for k in range(c) if k not in set(channels)])
        if len(keep):
            thresholds[index] = thresholds[keep].median()

    model.presence.weight[:, index] = 0.0
    for ch, digit in zip(channels, targets or [], strict=False):
        model.presence.weight[digit, ch] = target_weight
    _reset_moments(optimizer, model.presence.weight, (slice(None), index))
    if hasattr(model.decoder, "channel_embedding"):  # channel and point decoders
        emb = model.decoder.channel_embedding
        emb[index] = (torch.randn(len(channels), emb.shape[1]) * 0.02).to(emb)
        _reset_moments(optimizer, emb, index)
    elif isinstance(model.decoder, MotifDecoder):  # its first conv reads every channel
        first: nn.Conv2d = model.decoder.cell_conv[0]
        fresh = nn.Conv2d(first.in_channels, first.out_channels, first.kernel_size)
        first.weight[:, index] = fresh.weight[:, index].to(first.weight)
        _reset_moments(optimizer, first.weight, (slice(None), index))


def resample_summary(rows: list[tuple[int, int, int]]) -> str:
    """rows of (resampled channel, the channel it duplicated, or FAILED (-1) for a fresh
    channel that did not learn its digit, or UNSELECTIVE (-2) for a channel that explained
    no token; the digit it now targets)."""
    why = {FAILED: "did not learn it", UNSELECTIVE: "explained no token"}
    return ", ".join(
        f"channel {drop} ({f'duplicated {keep}' if keep >= 0 else why[keep]}) "
        f"-> digit {digit}" for drop, keep, digit in rows) or "none"
