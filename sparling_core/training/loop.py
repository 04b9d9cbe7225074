"""The training loop: end-to-end labels only, the sparsity annealed by the schedule.

Reads top to bottom: 1. set-up (or resume), 2. the loop (step, validate, anneal, save),
3. the final save. Every validation writes the checkpoint folder atomically, so a run
killed at any moment resumes from its last validation with the same data, schedule and
optimizer state (`train(config, resume=True)`). A SIGTERM or Ctrl-C is not a kill: the loop
stops after the step in progress and saves every sample trained (training/stop.py).

Under torch.distributed (W > 1 processes, `sparling train --nproc W` or torchrun; see
training/distributed.py) the same loop runs on every rank: `batch_size` stays the global
batch, rank r takes its samples r, r + W, ... of it, DDP averages the gradients, the
sparsity layer takes its BatchNorm statistics and thresholds over all ranks, the sequence
loss is normalised by the global token count, validation is split between the ranks and its
counts summed, so the schedule sees the same numbers everywhere; rank 0 alone plans
resampling (and broadcasts it) and writes the checkpoint folder. Without a process group
(or with one process) nothing of this runs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..analysis.evaluate import PAPER_DENSITY, validate
from ..checkpoint import (
    CheckpointError,
    holds_checkpoint,
    load_train_state,
    read_config,
    recover,
    save_checkpoint,
)
from ..domains import Domain, get_domain
from ..layers.global_stats import process_group
from ..models.sparling import (
    IGNORE,
    ModelConfig,
    SparlingModel,
    digit_circle_small,
    digit_circle_tiny,
    encode_labels,
    presence_targets,
)
from ..schedule import AdaptiveSparsitySchedule, FixedSparsitySchedule
from .resample import (
    FAILED,
    UNSELECTIVE,
    channel_peaks,
    detector_coverage,
    find_duplicates,
    find_unselective,
    presence_errors,
    resample_channels,
    resample_summary,
    selectivity,
    sparse_activity,
    uncovered_tokens,
)
from .stop import StopRequest

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "build_train_config", "read_config_file", "train"]


@dataclass
class TrainConfig:
    out: str = "runs/digit-circle-mt"  # not checkpoints/: never overwrite a shipped model
    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 32
    lr: float = 1e-3
    max_samples: int = 3_000_000  # hard budget in training samples
    max_minutes: float | None = None  # wall-clock budget (this process)
    val_every: int = 5_000  # samples between validations (and checkpoints)
    val_size: int = 1_000  # fixed validation seeds: the first val_size of the range
    schedule: str = "adaptive"  # adaptive (SPEC 1.3) | fixed (ablations, baselines)
    decay_per_sample: float = 1e-7  # the accuracy threshold's linear decay (SPEC 1.3)
    initial_threshold: float = 1.0  # SPEC 1.3 starts T at 1; lower starts annealing sooner
    min_threshold: float = 0.0  # SPEC 1.3's T_min; < 0 lets density fall at zero accuracy
    multiplier: float = 0.75
    target_density: float = PAPER_DENSITY  # stop once the schedule reaches it
    finish_samples: int = 0  # further training at the target density before stopping
    # None: the learning rate stays `lr` throughout. A number f in (0, 1]: over the
    # finish_samples at the target density the rate follows a cosine from lr down to f * lr
    # (a resample, which restarts the finish count, restarts it at lr).
    finish_lr: float | None = None
    # Tie the motif model's phases when the finish begins (the target density is reached):
    # an untied model (model.phase_tied false) anneals at its half-resolution cost, then
    # trains the finish, and is saved, as a phase-tied one, which answers the same at every
    # pixel phase (SparlingModel.tie_phases: each channel keeps the head row of the phase it
    # fires at on the validation images; no new weights).
    finish_phase_tied: bool = False
    # Duplicate-channel resampling (sparling_core/training/resample.py): at validations once the
    # density is <= resample_below_density, re-initialise one of any two channels that fire
    # together (>= resample_threshold of each one's activations within resample_radius px
    # of the other's) while some digit's presence is predicted worse than resample_min_error
    # nats (the fresh channel is pointed at that digit), then leave resample_cooldown
    # samples before the next check. A resample at the target density restarts the
    # finish_samples count. A fresh channel that has not learned its digit by the next
    # check (its error still >= resample_retry_error) is drawn again, at most
    # resample_max_retries times. Every resample restarts the finish_samples count; none
    # happens within one validation of max_samples.
    resample_duplicates: bool = False
    resample_below_density: float = 1e-3
    resample_radius: int = 4
    resample_threshold: float = 0.5
    resample_min_error: float = 0.1
    resample_target_weight: float = 1.0  # the fresh channel's presence weight on its digit
    resample_retry_error: float = 0.5  # a fresh channel whose digit is still this bad: redraw
    resample_max_retries: int = 2
    # When a fresh channel has been drawn resample_max_retries times and its digit is still
    # not learned, let go of the pairing: the channel leaves the pending set (it is not
    # redrawn at that check), and its digit is free again for the next duplicate or
    # unselective channel: at a later check that may be the same channel, if it still
    # explains no token, with its retries counted afresh. Without this (the default) the
    # channel keeps the digit, is never drawn again, and no other channel is aimed at it.
    resample_release_exhausted: bool = False
    resample_cooldown: int = 20_000
    # Also resample, at the same checks and for the same free digits, a channel that
    # duplicates nobody but explains no token: its strongest activation per image predicts
    # no token's presence better than AUC resample_min_selectivity (resample.py's
    # channel_selectivity; labels only). Such a channel fires on noise or hardly at all;
    # without this it keeps its place while a digit has no channel.
    resample_unselective: bool = False
    resample_min_selectivity: float = 0.75
    # Start a fresh channel as the trunk presence head's detector of its digit instead of a
    # random draw (resample_channels(aim=True); needs model.trunk_presence_weight > 0).
    resample_aim: bool = False
    # A token has a detector when some channel's strongest sparse activation in an image
    # predicts the token's presence in the label with ROC AUC >= detector_min_coverage
    # (resample.detector_coverage; labels only). Every validation logs each token's coverage
    # and the tokens below this ("coverage", "uncovered" in history.jsonl).
    detector_min_coverage: float = 0.9
    # Aim resampling at the tokens without a detector: fresh channels go first to the
    # uncovered tokens (least covered first), then to the worst-predicted ones; a fresh
    # channel has learned its token once the token is covered, and is drawn again while it
    # is not. Without this, the targets are ranked by the presence head's error, which
    # reads the dense map *before* the bottleneck and can predict a token that no channel
    # marks after it.
    resample_by_coverage: bool = False
    # bf16 autocast for the motif model's inner convs. None (auto): on for CUDA and for CPUs
    # with native bf16 matrix instructions (AMX, AVX512-BF16: ~1.3x faster there), off
    # elsewhere: on an AVX2-only CPU bf16 is emulated, and a training step measured 6x slower
    # than in fp32 (1.05 s vs 6-7 s for batch 32 on 2 threads).
    bf16: bool | None = None
    channels_last: bool = True
    threads: int | None = None  # torch.set_num_threads; None = torch's default
    device: str = "cpu"  # cpu | cuda (under torch.distributed: cuda:LOCAL_RANK)
    seed: int = 0  # weight initialisation

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = ModelConfig.from_dict(self.model)
        if not isinstance(self.model, ModelConfig):
            raise ValueError(f"model must be an object of model settings, got {self.model!r}")
        self._check_types()
        if self.schedule not in ("adaptive", "fixed"):
            raise ValueError(f"schedule must be 'adaptive' or 'fixed', got {self.schedule!r}")
        for name in ("batch_size", "max_samples", "val_every", "val_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.lr <= 0:
            raise ValueError("lr must be positive")
        if not 0 < self.resample_threshold <= 1:
            raise ValueError("resample_threshold must be in (0, 1]")
        if self.resample_radius < 0 or self.resample_cooldown < 0 or self.resample_max_retries < 0:
            raise ValueError("resample_radius, _cooldown and _max_retries must be >= 0")
        if not 0 < self.resample_below_density <= 1:
            raise ValueError("resample_below_density must be in (0, 1]")
        if self.resample_target_weight <= 0:
            raise ValueError("resample_target_weight must be positive")
        if self.resample_aim and self.model.trunk_presence_weight <= 0:
            raise ValueError("resample_aim needs model.trunk_presence_weight > 0 (it starts a "
                             "fresh channel from the trunk presence head)")
        if not 0.5 < self.detector_min_coverage <= 1:
            raise ValueError("detector_min_coverage must be in (0.5, 1] (an AUC; 0.5 is "
                             "chance)")
        if self.resample_retry_error < self.resample_min_error:
            raise ValueError("resample_retry_error must be >= resample_min_error")
        if not 0.5 < self.resample_min_selectivity <= 1:
            raise ValueError("resample_min_selectivity must be in (0.5, 1] (an AUC; 0.5 is "
                             "chance)")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.finish_phase_tied and self.model.phase_tied:
            raise ValueError("finish_phase_tied ties an untied motif model at the finish: "
                             "model.phase_tied must be false")
        if self.finish_lr is not None and not 0 < self.finish_lr <= 1:
            raise ValueError("finish_lr must be in (0, 1] (a fraction of lr), or null")

    def _check_types(self) -> None:
        """Each field has its annotated type: an int is an int (not a float or a bool), a
        float any finite number, a bool a bool; `| None` allows None."""
        for f in fields(self):
            value, kinds = getattr(self, f.name), str(f.type).replace(" ", "").split("|")
            if value is None and "None" in kinds:
                continue
            is_int = isinstance(value, int) and not isinstance(value, bool)
            if "int" in kinds and is_int:
                continue
            if "float" in kinds and (is_int or isinstance(value, float)) and \
                    math.isfinite(value):
                continue
            if ("bool" in kinds and isinstance(value, bool)) or \
                    ("str" in kinds and isinstance(value, str)) or "ModelConfig" in kinds:
                continue
            raise ValueError(f"{f.name} must be {' or '.join(kinds)}, got {value!r}")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training config keys: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d


def read_config_file(path: str | Path) -> dict:
    """The JSON object of a training config file (configs/*.json). Raises ValueError when
    the file is missing, is not JSON or holds something else than an object."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"config file {path} is not UTF-8 text: {e}") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"config file {path} is not valid JSON: {e}") from None
    except OSError as e:
        raise ValueError(f"config file {path} cannot be read: {e.strerror}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a JSON object")
    return data


def build_train_config(data: dict, *, model_size: str | None = None,
                       sparsity: str | None = None, domain: str | None = None,
                       data_dir: str | Path | None = None) -> TrainConfig:
    """A training config from a config file's JSON object, as `sparling train` builds it:
    the model section on top of the small architecture (the shipped one; `model_size`
    "tiny" for the tiny one; a config's own model section is taken as written), `sparsity`
    and `domain` when given, then the fields the domain fixes (vocabulary, label length,
    image shape; the config may set its channels). `data_dir`: a folder of images and
    labels.jsonl (indexed and checked line by line now, before any training; the generic
    "points" decoder unless the config names one). Raises ValueError naming the problem
    (a FolderError names the file and line)."""
    from ..domains import load_folder
    from ..domains.folder import folder_of

    data = dict(data)
    if not isinstance(data.get("model", {}), dict):
        raise ValueError('the config\'s "model" must be a JSON object')
    model = dict(data.get("model", {}))
    if data_dir is not None and domain is not None:
        raise ValueError("give --data or --domain, not both")
    data_dir = data_dir or folder_of(domain or model.get("domain"))
    user_decoder = "decoder" in model
    if data_dir is not None:
        folder = load_folder(data_dir)
        folder.require_split("train", "training")
        folder.require_split("val", "validation during training")
        domain = folder.name
    if model_size == "tiny":
        model = {**digit_circle_tiny().to_dict(), **model}
    elif model_size == "small" or (model_size is None and not model):
        model = {**digit_circle_small().to_dict(), **model}
    elif model_size is not None:
        raise ValueError(f"--model-size must be small or tiny, got {model_size!r}")
    if data_dir is not None and not user_decoder:  # the generic decoder for a data folder
        model["decoder"] = "points"
    if sparsity is not None:
        model["sparsity"] = sparsity
    if domain is not None:
        model["domain"] = domain
    chosen = get_domain(model.get("domain"))
    fixed = chosen.model_config_overrides()
    model = {**model, **{k: v for k, v in fixed.items()
                         if k != "motif_channels" or "motif_channels" not in model},
             "domain": chosen.name}
    data["model"] = model
    try:
        return TrainConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"invalid training config: {e}") from e


def _make_schedule(config: TrainConfig):
    if config.schedule == "fixed":
        return FixedSparsitySchedule(density=config.model.initial_density)
    return AdaptiveSparsitySchedule(
        density=config.model.initial_density, threshold=config.initial_threshold,
        min_threshold=config.min_threshold,
        decay_per_sample=config.decay_per_sample,
        multiplier=config.multiplier, target_density=config.target_density,
    )


def _training_batch(domain: Domain, start: int, batch_size: int, rank: int = 0,
                    world: int = 1) -> tuple[torch.Tensor, list[list[int]]]:
    """The data position picks the samples: training seeds start .. start + batch_size - 1
    of the domain's train split (wrapping around a finite split, epoch after epoch). Rank r
    of `world` processes takes the global batch's samples r, r + world, ... (batch_size is
    the global batch), so the ranks together see exactly one process's batch."""
    seeds = domain.split_range("train")
    return domain.batch(domain.samples(
        [seeds[(start + i) % len(seeds)] for i in range(rank, batch_size, world)], "train"))


def _device(config: TrainConfig) -> torch.device:
    if config.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' asked for, but torch sees no CUDA device")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _validate(model: SparlingModel, images: torch.Tensor, labels: list[list[int]],
              rank: int, world: int) -> tuple[float, float, torch.Tensor]:
    """(exact-match accuracy, realised density, (N, C) per-image channel peaks) on the
    validation set. Under torch.distributed each rank runs its share (images rank,
    rank + world, ...), the counts are summed and the peaks gathered back into image
    order: every rank gets the numbers one process would."""
    if world == 1:
        return validate(model, images, labels)
    mine = labels[rank::world]
    n = len(mine)
    per_image = model.config.motif_channels * int(np.prod(model.config.image_shape))
    counts = torch.zeros(4, dtype=torch.float64, device=images.device)
    peaks = torch.zeros(0, model.config.motif_channels)
    if n:
        accuracy, realised, peaks = validate(model, images[rank::world], mine)
        counts += torch.tensor([round(accuracy * n), n, round(realised * n * per_image),
                                n * per_image], dtype=torch.float64, device=images.device)
    dist.all_reduce(counts)
    shares: list = [None] * world
    dist.all_gather_object(shares, peaks)
    ordered = torch.zeros(len(labels), model.config.motif_channels)
    for r, share in enumerate(shares):
        ordered[r::world] = share
    correct, total, active, values = counts.tolist()
    return correct / total, active / values, ordered


def _coverage_fields(peaks: torch.Tensor, labels: list[list[int]], vocab: int,
                     minimum: float) -> dict:
    """History fields from a validation's channel peaks: per token its detector coverage
    (resample.detector_coverage; None where too few images hold it or lack it) and the
    tokens below `minimum`, least covered first."""
    coverage, _ = detector_coverage(peaks, presence_targets(labels, vocab))
    return {"coverage": [None if math.isnan(c) else round(c, 3) for c in coverage.tolist()],
            "uncovered": uncovered_tokens(coverage, minimum)}


def _broadcast_state(model: SparlingModel) -> None:
    """Every parameter and buffer from rank 0 (in place)."""
    for tensor in model.state_dict().values():
        if tensor.is_contiguous():
            dist.broadcast(tensor, src=0)
        else:  # channels-last weights
            dense = tensor.contiguous()
            dist.broadcast(dense, src=0)
            tensor.copy_(dense)


def _any_ranks(flags: list[bool], device: torch.device) -> list[bool]:
    """Each flag, true if it is true on any rank."""
    t = torch.tensor([int(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def _plan_resampling(model: SparlingModel, images: torch.Tensor, labels: list[list[int]],
                     config: TrainConfig, pending: dict[int, int],
                     retries: dict[int, int]) -> list[tuple[int, int, int]]:
    """Rows of (channel to resample, the channel it duplicates or -1, the digit it will
    target). `pending` maps channels resampled earlier to their digits: one whose digit is
    still near chance (>= resample_retry_error) gets a fresh draw at the same digit, at most
    resample_max_retries times (`retries` counts them); one whose digit is explained
    (< resample_min_error) leaves `pending`. With resample_release_exhausted, one that has
    used up its retries and still fails leaves `pending` too, and sits this check out, so
    its digit goes to another channel. Then the channels that explain no token (with
    resample_unselective; least selective first) and the strongest duplicates among the
    other channels get the worst-explained digits nobody is learning yet. With
    resample_by_coverage, "explained" means covered by a detector (`detector_coverage` >=
    detector_min_coverage), and the uncovered digits come first."""
    errors = presence_errors(model, images, labels)
    peaks: list = []  # (channel peaks, token targets): one eval forward, run when first needed

    def peaks_and_targets() -> tuple[torch.Tensor, torch.Tensor]:
        if not peaks:
            peaks.extend((channel_peaks(model, images),
                          presence_targets(labels, model.presence.out_features)))
        return peaks[0], peaks[1]

    if config.resample_by_coverage:  # learned: the token has a detector in the sparse map
        coverage, _ = detector_coverage(*peaks_and_targets())
        uncovered = uncovered_tokens(coverage, config.detector_min_coverage)
        learned = [d not in uncovered for d in range(len(errors))]
        failed = [not ok for ok in learned]
    else:  # learned: the presence head predicts the token
        uncovered = []
        learned = (errors < config.resample_min_error).tolist()
        failed = (errors >= config.resample_retry_error).tolist()
    released = set()  # channels whose retries ran out: not drawn at this check
    for channel, digit in list(pending.items()):
        exhausted = failed[digit] and retries.get(channel, 0) >= config.resample_max_retries
        if learned[digit] or (exhausted and config.resample_release_exhausted):
            del pending[channel]
            retries_spent = retries.pop(channel, 0)
            if not learned[digit]:
                released.add(channel)
                logger.info("released channel %d from digit %d (%d redraws did not learn it)",
                            channel, digit, retries_spent)
    rows = [(channel, -1, digit) for channel, digit in pending.items()
            if failed[digit] and retries.get(channel, 0) < config.resample_max_retries]
    by_error = [d for d in errors.argsort(descending=True).tolist()
                if errors[d] >= config.resample_min_error]
    free = [d for d in dict.fromkeys(uncovered + by_error) if d not in pending.values()]
    if free:
        lost = []
        if config.resample_unselective:
            scores = selectivity(*peaks_and_targets())
            lost = [(c, UNSELECTIVE) for c in find_unselective(
                scores, config.resample_min_selectivity, exclude=set(pending) | released)]
        pairs = find_duplicates(sparse_activity(model, images), config.resample_radius,
                                config.resample_threshold,
                                exclude=set(pending) | released | {c for c, _ in lost})
        rows += [(drop, keep, digit)
                 for (drop, keep), digit in zip(lost + pairs, free, strict=False)]
    return rows


def _check_domain(model: ModelConfig, domain: Domain) -> None:
    """The model config must fit the domain it names (vocabulary, length, image shape)."""
    expected = domain.model_config_overrides()
    free = ("motif_channels", "min_length", "image_size", "max_digits")
    wrong = [f"{k}={getattr(model, k)!r} (the domain needs {v!r})"
             for k, v in expected.items() if k not in free and getattr(model, k) != v]
    if model.image_shape != tuple(domain.image_shape):
        wrong.append(f"image {model.image_shape} (the domain's images are {domain.image_shape})")
    if model.max_digits < domain.max_label_length:
        wrong.append(f"max_digits={model.max_digits} < the longest label "
                     f"{domain.max_label_length}")
    if wrong:
        raise ValueError(f"the model config does not fit domain {domain.name!r}: "
                         + "; ".join(wrong))


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (AMX or AVX512-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def use_bf16(config: TrainConfig, device: torch.device) -> bool:
    """The config's bf16 setting, with None (auto) resolved for this device."""
    if config.bf16 is not None:
        return bool(config.bf16)
    return device.type == "cuda" or cpu_has_fast_bf16()


# training settings a resume must keep: the data position and the saved tensors depend on
# them (the budgets, the validation interval and the learning rate may change)
RESUME_FIXED = ("batch_size", "schedule", "seed")


def _tie_phases(model: SparlingModel, optimizer: torch.optim.Optimizer,
                val_images: torch.Tensor, rank: int) -> None:
    """finish_phase_tied: tie the motif model's phases at the phase each channel fires at on
    the validation images (the same on every rank: the same weights and images), with the
    head's Adam moments permuted as its rows are."""
    phases = model.dominant_phases(val_images)
    perm = model.tie_phases(phases)
    if perm is not None:
        head = model.motif_model.head
        for param in (head.weight, head.bias):
            for moment in optimizer.state.get(param, {}).values():
                if torch.is_tensor(moment) and moment.shape == param.shape:
                    moment.copy_(moment[perm.to(moment.device)])
    if rank == 0:
        logger.info("finish begins: motif model phase-tied at each channel's phase %s",
                    phases)


def learning_rate(config: TrainConfig, samples_seen: int, finish_from: int | None) -> float:
    """The rate for the next step: `lr`, or within the finish phase (`finish_from` is where
    it began) a cosine from lr to finish_lr * lr over finish_samples."""
    if config.finish_lr is None or finish_from is None or config.finish_samples <= 0:
        return config.lr
    progress = min(max((samples_seen - finish_from) / config.finish_samples, 0.0), 1.0)
    floor = config.finish_lr
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def _check_resume(config: TrainConfig, saved: dict, out: Path) -> None:
    """CheckpointError (one line) when `config` cannot continue the run saved in `out`."""
    model = saved.get("model") if isinstance(saved.get("model"), dict) else {}
    ours = config.model.to_dict()
    # a setting the saved config lacks was written before it existed: it had its default
    defaults = ModelConfig().to_dict()
    wrong = [f"model.{k}: saved {model.get(k, defaults.get(k))!r}, now {v!r}"
             for k, v in ours.items()
             if (model[k] if k in model else defaults.get(k, v)) != v]
    train = saved.get("train") if isinstance(saved.get("train"), dict) else {}
    wrong += [f"{k}: saved {train[k]!r}, now {getattr(config, k)!r}" for k in RESUME_FIXED
              if k in train and train[k] != getattr(config, k)]
    if wrong:
        raise CheckpointError(f"cannot resume {out} with another configuration ("
                              + "; ".join(wrong) + "); use the saved one or a new --out")


def train(config: TrainConfig, resume: bool = False, progress: bool = True,
          force: bool = False) -> Path:
    """Train, saving a checkpoint generation at every validation. `resume`: continue from
    the state in config.out. A fresh run refuses a folder that holds a checkpoint unless
    `force` (then that checkpoint is replaced at the first save)."""
    out = Path(config.out)
    recover(out)  # a save killed between its two renames, stale temporaries
    if not resume and not force and holds_checkpoint(out):
        raise CheckpointError(f"{out} already holds a checkpoint: resume it (--resume) or "
                              "replace it (--force)")
    if config.threads:
        torch.set_num_threads(config.threads)
    # torch.distributed: W ranks share each global batch (see the module docstring)
    distributed = process_group() is not None
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} (the global batch) must be "
                         f"divisible by the number of processes, {world}")
    device = _device(config)
    bf16 = use_bf16(config, device)
    logger.info("bf16 autocast %s (config: %s)", "on" if bf16 else "off",
                "auto" if config.bf16 is None else config.bf16)
    progress = progress and rank == 0

    # 1. Set-up: the domain, model, optimizer, schedule, fixed validation set; or the saved
    # state.
    domain = get_domain(config.model.domain)
    _check_domain(config.model, domain)
    torch.manual_seed(config.seed)
    model = SparlingModel(config.model)
    if device.type != "cpu":
        model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = _make_schedule(config)
    samples_seen, finish_from, last_resample, history = 0, None, None, []
    pending: dict[int, int] = {}  # resampled channel -> its digit, until it is explained
    retries: dict[int, int] = {}  # resampled channel -> redraws since its first draw
    if not distributed:
        state = load_train_state(out) if resume else None
    else:  # rank 0 reads it (the folder need not be shared between machines)
        box = [load_train_state(out) if resume and rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        state = box[0]
    if resume and state is None and holds_checkpoint(out) and not force:
        raise CheckpointError(f"{out} holds a checkpoint without a training state; "
                              "it cannot be resumed (--force starts afresh over it)")
    if resume and state is None and rank == 0:
        logger.warning("no training state in %s: starting from scratch", out)
    if state is not None:
        _check_resume(config, state.get("config") or read_config(out), out)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if getattr(schedule, "target_density", None) not in (None, config.target_density):
            # the target is where the run is going, not where it is: the config's wins
            if rank == 0:
                logger.info("target density %g (the saved run's was %g)",
                            config.target_density, schedule.target_density)
            schedule.target_density = config.target_density
        torch.set_rng_state(state["torch_rng"])
        samples_seen, finish_from = state["samples_seen"], state.get("finish_from")
        if state.get("motif_phase_tied"):
            model.tie_phases()  # as it was when saved (the same weights either way)
        last_resample = state.get("last_resample")
        pending = {int(c): int(d) for c, d in state.get("resample_pending", [])}
        retries = {int(c): int(k) for c, k in state.get("resample_retries", [])}
        history = [h for h in state["history"] if h["samples"] <= samples_seen]
        if rank == 0:
            logger.info("resumed %s at %d samples, %r", out, samples_seen, schedule)
    model.set_density(schedule.density)
    model.train()
    # DDP averages the gradients; buffers (thresholds, BatchNorm statistics) are computed
    # identically on every rank, so they are not broadcast
    step_model = model if not distributed else DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        forward_sync_buffers=False)
    val_seeds = domain.split_range("val")
    val_images, val_labels = domain.batch(
        domain.samples(val_seeds[:min(config.val_size, len(val_seeds))], "val"))
    if device.type != "cpu":
        val_images = val_images.to(device)

    # finish_phase_tied asked for on resuming a run whose finish began untied (the saved
    # state records whether the model was tied): tie it now, at each channel's phase
    if config.finish_phase_tied and finish_from is not None and not model.motif_model.phase_tied:
        _tie_phases(model, optimizer, val_images, rank)
    fresh = state is None  # the first save of a fresh run keeps nothing of the folder

    # The final save records whether the run ended where its config ends it (a budget or
    # the finish), not cut short by max_minutes or a signal: a script that evaluates runs
    # when train() returns reads "complete" from the train state (experiments/ablations.py).
    complete = False

    def save(metrics: dict | None = None) -> None:
        nonlocal fresh
        if rank:
            return  # rank 0 writes the checkpoint folder
        train_state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "torch_rng": torch.get_rng_state(),
            "samples_seen": samples_seen, "finish_from": finish_from,
            "last_resample": last_resample,
            "resample_pending": [[c, d] for c, d in pending.items()],
            "resample_retries": [[c, k] for c, k in retries.items()], "history": history,
            "complete": complete, "motif_phase_tied": model.motif_model.phase_tied,
            "config": {"model": config.model.to_dict(), "train": config.to_dict()},
        }
        save_checkpoint(out, model, samples_seen=samples_seen, train_config=config.to_dict(),
                        history=history, metrics=metrics, train_state=train_state,
                        carry_over=not fresh)
        fresh = False

    # 2. The loop.
    start_time, start_samples = time.monotonic(), samples_seen
    last_val = samples_seen - samples_seen % config.val_every
    losses: list[float] = []
    bar = tqdm(total=config.max_samples, initial=samples_seen, unit="sample",
               disable=not progress, dynamic_ncols=True)
    stop_reason = "max_samples"
    with StopRequest() as stop:  # SIGTERM / Ctrl-C: save what is trained, then stop
        while samples_seen < config.max_samples:
            if finish_from is not None and samples_seen - finish_from >= config.finish_samples:
                stop_reason = "target density reached"
                break
            minutes = (time.monotonic() - start_time) / 60
            over = config.max_minutes is not None and minutes >= config.max_minutes
            asked = stop.requested is not None  # SIGTERM / SIGINT to this process
            if distributed:  # the clocks differ, a signal reaches one rank: stop together
                over, asked = _any_ranks([over, asked], device)
            if over or asked:
                stop_reason = "max_minutes" if over else (
                    f"{stop.requested or 'another rank'} received")
                break
            images, labels = _training_batch(domain, samples_seen, config.batch_size, rank, world)
            if device.type != "cpu":
                images = images.to(device, non_blocking=True)
            if config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            inputs, targets = encode_labels(labels, config.model.max_digits,
                                            config.model.vocab_size)
            inputs, targets = inputs.to(device), targets.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                output = step_model(images, inputs)
            if not distributed:
                sequence_loss = F.cross_entropy(output.logits.flatten(0, 1), targets.flatten(),
                                                ignore_index=IGNORE)
            else:  # the global batch's mean over its tokens, once DDP has averaged the ranks
                tokens = (targets != IGNORE).sum()
                dist.all_reduce(tokens)
                sequence_loss = F.cross_entropy(output.logits.flatten(0, 1), targets.flatten(),
                                                ignore_index=IGNORE, reduction="sum") * (
                                                    world / tokens.item())
            present = presence_targets(labels, config.model.vocab_size).to(device)
            presence_loss = F.binary_cross_entropy_with_logits(output.presence_logits, present)
            loss = sequence_loss + output.penalty + config.model.presence_weight * presence_loss
            if output.trunk_presence_logits is not None:  # trunk_presence_weight > 0
                loss = loss + config.model.trunk_presence_weight * (
                    F.binary_cross_entropy_with_logits(output.trunk_presence_logits, present))
            if not distributed:
                step_losses = (loss.item(), sequence_loss.item(), presence_loss.item())
            else:  # the global batch's losses: the mean over ranks of equal shares
                reduced = torch.stack([loss, sequence_loss, presence_loss]).detach().double()
                dist.all_reduce(reduced)
                step_losses = tuple(v / world for v in reduced.tolist())
            if not math.isfinite(step_losses[0]):
                raise FloatingPointError(f"loss became {step_losses[0]} at {samples_seen} samples")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, samples_seen, finish_from)
            optimizer.step()
            samples_seen += config.batch_size
            losses.append(step_losses)
            bar.update(config.batch_size)

            if samples_seen - last_val >= config.val_every:
                # Validate in eval mode, let the schedule anneal, log, and save.
                last_val = samples_seen - samples_seen % config.val_every
                accuracy, realised, peaks = _validate(model, val_images, val_labels,
                                                      rank, world)
                # once the target is reached the density stays put for `finish_samples`
                lowered = finish_from is None and schedule.step(samples_seen, accuracy)
                if schedule.done and finish_from is None:
                    finish_from = samples_seen
                    if config.finish_phase_tied:
                        _tie_phases(model, optimizer, val_images, rank)
                model.set_density(schedule.density)
                resampled = []
                if (config.resample_duplicates
                        and schedule.density <= config.resample_below_density
                        and (last_resample is None
                             or samples_seen - last_resample >= config.resample_cooldown)):
                    # never leave a fresh channel in the final save: resample only if there is
                    # at least one more validation interval to train it (a resample restarts
                    # finish_samples; max_minutes cannot be foreseen)
                    more = samples_seen + config.val_every <= config.max_samples
                    if not distributed:
                        resampled = more and _plan_resampling(model, val_images, val_labels,
                                                              config, pending, retries) or []
                    else:  # rank 0 decides (it may forget pending channels) and tells the rest
                        box = [(more and _plan_resampling(model, val_images, val_labels, config,
                                                          pending, retries) or [],
                                pending, retries) if rank == 0 else None]
                        dist.broadcast_object_list(box, src=0)
                        resampled, pending, retries = box[0]
                    if resampled:
                        for drop, keep, _ in resampled:
                            retries[drop] = retries.get(drop, 0) + 1 if keep == FAILED else 0
                        pending.update({drop: digit for drop, _, digit in resampled})
                        resample_channels(model, [r[0] for r in resampled], optimizer,
                                          targets=[r[2] for r in resampled],
                                          target_weight=config.resample_target_weight,
                                          aim=config.resample_aim)
                        if distributed:  # fresh weights come from the RNG: rank 0's hold
                            _broadcast_state(model)
                        last_resample = samples_seen
                        if finish_from is not None:
                            finish_from = samples_seen
                        logger.info("resampled %s", resample_summary(resampled))
                elapsed = time.monotonic() - start_time
                row = {
                    "samples": samples_seen,
                    "loss": float(np.mean([x[0] for x in losses])) if losses else None,
                    "sequence_loss": float(np.mean([x[1] for x in losses])) if losses else None,
                    "presence_loss": float(np.mean([x[2] for x in losses])) if losses else None,
                    "accuracy": accuracy, "density": schedule.density,
                    "realised_density": realised, "threshold": getattr(schedule, "threshold", None),
                    "lowered": lowered, "resampled": [list(p) for p in resampled],
                    **_coverage_fields(peaks, val_labels, model.presence.out_features,
                                       config.detector_min_coverage),
                    "lr": optimizer.param_groups[0]["lr"],
                    "wall_s": round(elapsed, 1),
                    "samples_per_s": round((samples_seen - start_samples) / max(elapsed, 1e-9), 1),
                    # where the wall time was measured: a claim read off wall_s needs both
                    "device": device.type, "threads": torch.get_num_threads(),
                    "world_size": world,
                }
                history.append(row)
                losses = []
                bar.set_postfix(acc=f"{accuracy:.3f}", density=f"{schedule.density:.3g}",
                                T=f"{row['threshold'] or 0:.3f}")
                if rank == 0:
                    logger.info("validation %s", row)
                save()
    bar.close()

    # 3. Final save.
    complete = stop_reason in ("max_samples", "target density reached")
    save()
    if distributed:
        dist.barrier()  # every rank returns once the folder is written
    if rank == 0:
        logger.info("stopped (%s) at %d samples, %r", stop_reason, samples_seen, schedule)
    return out
