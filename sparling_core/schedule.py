"""Sparsity schedules: the adaptive annealing of SPEC 1.3 and a fixed one for ablations.

The trainer calls `step(samples_seen, accuracy)` after every validation and applies the
returned density to the model. Time is counted in training *samples* (the step unit), so a
decay of 1e-7 per sample is 0.002 per validation of every 20,000 samples, as in the paper.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

logger = logging.getLogger(__name__)

__all__ = ["AdaptiveSparsitySchedule", "FixedSparsitySchedule", "SparsitySchedule"]


@dataclass
class AdaptiveSparsitySchedule:
    """Lower the density by `multiplier` whenever validation accuracy beats a threshold
    that decays linearly in samples and then rises to the best accuracy seen.

        T = clip(T - decay_per_sample * samples_since_last, min_threshold, max_threshold)
        if accuracy > T: density *= multiplier
        T = max(T, accuracy)
    """

    density: float = 0.5
    threshold: float = 1.0  # accuracy threshold T; 1.0 = no update until it decays
    decay_per_sample: float = 1e-7
    min_threshold: float = 0.0
    max_threshold: float = 1.0
    multiplier: float = 0.75  # the paper's "information multiplier"
    min_samples_between_updates: int = 0
    target_density: float | None = None  # `done` once density reaches it
    last_samples: int = 0  # samples seen at the last update

    def __post_init__(self):
        if not 0 < self.density <= 1:
            raise ValueError(f"density must be in (0, 1], got {self.density}")
        if not 0 < self.multiplier < 1:
            raise ValueError(f"multiplier must be in (0, 1), got {self.multiplier}")
        if self.decay_per_sample < 0:
            raise ValueError("decay_per_sample must be >= 0")
        if self.min_threshold > self.max_threshold:
            raise ValueError("min_threshold must be <= max_threshold")

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    @property
    def done(self) -> bool:
        # relative tolerance: 0.5 * 0.75**32 computed two ways must count as reached
        return self.target_density is not None and (
            self.density <= self.target_density * (1 + 1e-9))

    def step(self, samples_seen: int, accuracy: float) -> bool:
        """Record a validation at `samples_seen`; returns True if the density was lowered."""
        elapsed = samples_seen - self.last_samples
        if elapsed < 0:
            raise ValueError(f"samples_seen went backwards ({samples_seen} < {self.last_samples})")
        if elapsed < self.min_samples_between_updates:
            return False
        self.last_samples = samples_seen
        self.threshold -= self.decay_per_sample * elapsed
        self.threshold = min(max(self.threshold, self.min_threshold), self.max_threshold)
        lowered = accuracy > self.threshold
        if lowered:
            old = self.density
            self.density *= self.multiplier
            logger.info(
                "accuracy %.4f > threshold %.4f: density %.4g -> %.4g",
                accuracy, self.threshold, old, self.density,
            )
        else:
            logger.debug("accuracy %.4f <= threshold %.4f: density stays %.4g",
                         accuracy, self.threshold, self.density)
        self.threshold = max(self.threshold, accuracy)
        return lowered

    def state_dict(self) -> dict:
        return {"kind": "adaptive", **asdict(self)}

    def load_state_dict(self, state: dict) -> None:
        state = {k: v for k, v in state.items() if k != "kind"}
        for key, value in AdaptiveSparsitySchedule(**state).__dict__.items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        return (
            f"AdaptiveSparsitySchedule(density={self.density:.4g}, threshold={self.threshold:.4f}, "
            f"decay_per_sample={self.decay_per_sample:g}, multiplier={self.multiplier}, "
            f"target_density={self.target_density})"
        )


@dataclass
class FixedSparsitySchedule:
    """Constant density (the no-annealing ablation, or the L1 / KL baselines)."""

    density: float = 5.0226e-5
    target_density: float | None = None  # never `done`: stop by sample budget

    def __post_init__(self):
        if not 0 < self.density <= 1:
            raise ValueError(f"density must be in (0, 1], got {self.density}")

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    @property
    def done(self) -> bool:
        return False

    def step(self, samples_seen: int, accuracy: float) -> bool:
        return False

    def state_dict(self) -> dict:
        return {"kind": "fixed", **asdict(self)}

    def load_state_dict(self, state: dict) -> None:
        state = {k: v for k, v in state.items() if k != "kind"}
        for key, value in FixedSparsitySchedule(**state).__dict__.items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        return f"FixedSparsitySchedule(density={self.density:.4g})"


SparsitySchedule = AdaptiveSparsitySchedule | FixedSparsitySchedule
