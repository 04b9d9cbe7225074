"""The training loop: end-to-end labels only, the sparsity annealed by the schedule.

Reads top to bottom: 1. set-up (or resume), 2. the loop (step, validate, anneal, save),
3. the final save. Every validation writes the checkpoint folder atomically, so a run
killed at any moment resumes from its last validation with the same data, schedule and
optimizer state (`train(config, resume=True)`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..analysis.evaluate import PAPER_DENSITY, exact_match_accuracy
from ..checkpoint import (
    CheckpointError,
    holds_checkpoint,
    load_train_state,
    read_config,
    recover,
    save_checkpoint,
)
from ..domains import Domain, get_domain
from ..models.sparling import IGNORE, ModelConfig, SparlingModel, encode_labels, presence_targets
from ..schedule import AdaptiveSparsitySchedule, FixedSparsitySchedule
from .resample import (
    find_duplicates,
    presence_errors,
    resample_channels,
    resample_summary,
    sparse_activity,
)

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "train"]


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
    resample_cooldown: int = 20_000
    bf16: bool = True  # bf16 autocast for the motif model's inner convs (~1.3x on CPU)
    channels_last: bool = True
    threads: int | None = None  # torch.set_num_threads; None = torch's default
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
        if self.resample_retry_error < self.resample_min_error:
            raise ValueError("resample_retry_error must be >= resample_min_error")

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


def _make_schedule(config: TrainConfig):
    if config.schedule == "fixed":
        return FixedSparsitySchedule(density=config.model.initial_density)
    return AdaptiveSparsitySchedule(
        density=config.model.initial_density, threshold=config.initial_threshold,
        min_threshold=config.min_threshold,
        decay_per_sample=config.decay_per_sample,
        multiplier=config.multiplier, target_density=config.target_density,
    )


def _training_batch(domain: Domain, start: int, batch_size: int
                    ) -> tuple[torch.Tensor, list[list[int]]]:
    """The data position picks the samples: training seeds start .. start + batch_size - 1
    of the domain's train split (wrapping around a finite split, epoch after epoch)."""
    seeds = domain.split_range("train")
    return domain.batch(domain.samples(
        [seeds[(start + i) % len(seeds)] for i in range(batch_size)], "train"))


def _plan_resampling(model: SparlingModel, images: torch.Tensor, labels: list[list[int]],
                     config: TrainConfig, pending: dict[int, int],
                     retries: dict[int, int]) -> list[tuple[int, int, int]]:
    """Rows of (channel to resample, the channel it duplicates or -1, the digit it will
    target). `pending` maps channels resampled earlier to their digits: one whose digit is
    still near chance (>= resample_retry_error) gets a fresh draw at the same digit, at most
    resample_max_retries times (`retries` counts them); one whose digit is explained
    (< resample_min_error) leaves `pending`. Then the strongest duplicates among the other
    channels get the worst-explained digits nobody is learning yet."""
    errors = presence_errors(model, images, labels)
    for channel, digit in list(pending.items()):
        if errors[digit] < config.resample_min_error:
            del pending[channel]
            retries.pop(channel, None)
    rows = [(channel, -1, digit) for channel, digit in pending.items()
            if errors[digit] >= config.resample_retry_error
            and retries.get(channel, 0) < config.resample_max_retries]
    free = [d for d in errors.argsort(descending=True).tolist()
            if errors[d] >= config.resample_min_error and d not in pending.values()]
    if free:
        pairs = find_duplicates(sparse_activity(model, images), config.resample_radius,
                                config.resample_threshold, exclude=set(pending))
        rows += [(drop, keep, digit) for (drop, keep), digit in zip(pairs, free, strict=False)]
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


# training settings a resume must keep: the data position and the saved tensors depend on
# them (the budgets, the validation interval and the learning rate may change)
RESUME_FIXED = ("batch_size", "schedule", "seed")


def _check_resume(config: TrainConfig, saved: dict, out: Path) -> None:
    """CheckpointError (one line) when `config` cannot continue the run saved in `out`."""
    model = saved.get("model") if isinstance(saved.get("model"), dict) else {}
    ours = config.model.to_dict()
    wrong = [f"model.{k}: saved {model.get(k)!r}, now {v!r}" for k, v in ours.items()
             if k in model and model[k] != v]
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

    # 1. Set-up: the domain, model, optimizer, schedule, fixed validation set; or the saved
    # state.
    domain = get_domain(config.model.domain)
    _check_domain(config.model, domain)
    torch.manual_seed(config.seed)
    model = SparlingModel(config.model)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = _make_schedule(config)
    samples_seen, finish_from, last_resample, history = 0, None, None, []
    pending: dict[int, int] = {}  # resampled channel -> its digit, until it is explained
    retries: dict[int, int] = {}  # resampled channel -> redraws since its first draw
    state = load_train_state(out) if resume else None
    if resume and state is None:
        if holds_checkpoint(out) and not force:
            raise CheckpointError(f"{out} holds a checkpoint without a training state; "
                                  "it cannot be resumed (--force starts afresh over it)")
        logger.warning("no training state in %s: starting from scratch", out)
    if state is not None:
        _check_resume(config, state.get("config") or read_config(out), out)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["torch_rng"])
        samples_seen, finish_from = state["samples_seen"], state.get("finish_from")
        last_resample = state.get("last_resample")
        pending = {int(c): int(d) for c, d in state.get("resample_pending", [])}
        retries = {int(c): int(k) for c, k in state.get("resample_retries", [])}
        history = [h for h in state["history"] if h["samples"] <= samples_seen]
        logger.info("resumed %s at %d samples, %r", out, samples_seen, schedule)
    model.set_density(schedule.density)
    model.train()
    val_seeds = domain.split_range("val")
    val_images, val_labels = domain.batch(
        domain.samples(val_seeds[:min(config.val_size, len(val_seeds))], "val"))

    fresh = state is None  # the first save of a fresh run keeps nothing of the folder

    def save(metrics: dict | None = None) -> None:
        nonlocal fresh
        train_state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "torch_rng": torch.get_rng_state(),
            "samples_seen": samples_seen, "finish_from": finish_from,
            "last_resample": last_resample,
            "resample_pending": [[c, d] for c, d in pending.items()],
            "resample_retries": [[c, k] for c, k in retries.items()], "history": history,
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
    while samples_seen < config.max_samples:
        if finish_from is not None and samples_seen - finish_from >= config.finish_samples:
            stop_reason = "target density reached"
            break
        minutes = (time.monotonic() - start_time) / 60
        if config.max_minutes is not None and minutes >= config.max_minutes:
            stop_reason = "max_minutes"
            break
        images, labels = _training_batch(domain, samples_seen, config.batch_size)
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        inputs, targets = encode_labels(labels, config.model.max_digits, config.model.vocab_size)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
            output = model(images, inputs)
        sequence_loss = F.cross_entropy(output.logits.flatten(0, 1), targets.flatten(),
                                        ignore_index=IGNORE)
        presence_loss = F.binary_cross_entropy_with_logits(
            output.presence_logits, presence_targets(labels, config.model.vocab_size))
        loss = sequence_loss + output.penalty + config.model.presence_weight * presence_loss
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss became {loss.item()} at {samples_seen} samples")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        samples_seen += config.batch_size
        losses.append((loss.item(), sequence_loss.item(), presence_loss.item()))
        bar.update(config.batch_size)

        if samples_seen - last_val >= config.val_every:
            # Validate in eval mode, let the schedule anneal, log, and save.
            last_val = samples_seen - samples_seen % config.val_every
            accuracy, realised = exact_match_accuracy(model, val_images, val_labels)
            # once the target is reached the density stays put for `finish_samples`
            lowered = finish_from is None and schedule.step(samples_seen, accuracy)
            if schedule.done and finish_from is None:
                finish_from = samples_seen
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
                resampled = more and _plan_resampling(model, val_images, val_labels, config,
                                                      pending, retries) or []
                if resampled:
                    for drop, keep, _ in resampled:
                        retries[drop] = retries.get(drop, 0) + 1 if keep < 0 else 0
                    pending.update({drop: digit for drop, _, digit in resampled})
                    resample_channels(model, [r[0] for r in resampled], optimizer,
                                      targets=[r[2] for r in resampled],
                                      target_weight=config.resample_target_weight)
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
                "wall_s": round(elapsed, 1),
                "samples_per_s": round((samples_seen - start_samples) / max(elapsed, 1e-9), 1),
            }
            history.append(row)
            losses = []
            bar.set_postfix(acc=f"{accuracy:.3f}", density=f"{schedule.density:.3g}",
                            T=f"{row['threshold'] or 0:.3f}")
            logger.info("validation %s", row)
            save()
    bar.close()

    # 3. Final save.
    save()
    logger.info("stopped (%s) at %d samples, %r", stop_reason, samples_seen, schedule)
    return out
