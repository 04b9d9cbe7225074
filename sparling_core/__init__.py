"""Sparling: networks with extremely sparse, interpretable activations.

The public API; everything else is an implementation detail.
"""

from .analysis.evaluate import PAPER_DENSITY, PAPER_RESULTS
from .analysis.metrics import MotifStats, align_image, channel_assignment, sequence_error
from .api import (
    Alignment,
    Decoding,
    Fit,
    ImageLike,
    Intervention,
    ModelLike,
    MotifMatch,
    RunResult,
    SparseActivations,
    align,
    as_model,
    evaluate,
    intervene,
    load_train_config,
    model_assignment,
    run,
    run_batch,
    train_from_config,
)
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .domains import (
    Domain,
    Motif,
    Sample,
    digit_circle,
    domain_names,
    get_domain,
    register,
)
from .layers.sparsity import (
    KLSparsity,
    L1Sparsity,
    NoSparsity,
    SparsityLayer,
    SpatialSparsity,
    TopKSparsity,
    make_sparsity_layer,
)
from .models.sparling import ModelConfig, SparlingModel, digit_circle_small, digit_circle_tiny
from .schedule import AdaptiveSparsitySchedule, FixedSparsitySchedule
from .training.loop import TrainConfig, train

__all__ = [
    # README, "Use it from Python": load, run, align, intervene, evaluate, train
    "Alignment",
    "Decoding",
    "Fit",
    "ImageLike",
    "Intervention",
    "ModelLike",
    "MotifMatch",
    "RunResult",
    "SparseActivations",
    "align",
    "as_model",
    "intervene",
    "load_train_config",
    "model_assignment",
    "run",
    "run_batch",
    "train_from_config",
    # building blocks
    "AdaptiveSparsitySchedule",
    "Domain",
    "Motif",
    "Sample",
    "domain_names",
    "get_domain",
    "register",
    "Checkpoint",
    "CheckpointError",
    "FixedSparsitySchedule",
    "KLSparsity",
    "L1Sparsity",
    "ModelConfig",
    "MotifStats",
    "NoSparsity",
    "PAPER_DENSITY",
    "PAPER_RESULTS",
    "SparlingModel",
    "SparsityLayer",
    "SpatialSparsity",
    "TopKSparsity",
    "TrainConfig",
    "align_image",
    "channel_assignment",
    "digit_circle",
    "digit_circle_small",
    "digit_circle_tiny",
    "evaluate",
    "load_checkpoint",
    "make_sparsity_layer",
    "save_checkpoint",
    "sequence_error",
    "train",
]
