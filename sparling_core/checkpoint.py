"""Checkpoint folders: safe to load, written atomically.

    checkpoints/NAME/
      model.safetensors   weights, sparsity thresholds and level, BatchNorm statistics
      config.json         format version, model config, training config, samples seen
      metrics.json        the latest evaluation (may be absent before one)
      history.jsonl       one JSON object per validation during training
      train_state.pt      resumable state (optimizer, schedule, RNG, data position, weights);
                          optional: shipped copies may omit it

Nothing is unpickled: weights come from safetensors, the training state through
`torch.load(weights_only=True)`. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .models.sparling import ModelConfig, SparlingModel

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "read_history",
    "atomic_write_text",
    "FORMAT_VERSION",
]

FORMAT_VERSION = 1
MODEL_FILE, CONFIG_FILE, METRICS_FILE = "model.safetensors", "config.json", "metrics.json"
HISTORY_FILE, TRAIN_STATE_FILE = "history.jsonl", "train_state.pt"


class CheckpointError(ValueError):
    """A checkpoint folder is missing, partial or corrupt."""


@dataclass
class Checkpoint:
    path: Path
    model: SparlingModel
    config: ModelConfig
    meta: dict  # the whole config.json
    metrics: dict | None = None
    history: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; checkpoints are read by other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))


def save_checkpoint(folder: str | Path, model: SparlingModel, *, samples_seen: int = 0,
                    train_config: dict | None = None, metrics: dict | None = None,
                    history: list[dict] | None = None) -> Path:
    """Write model.safetensors and config.json (and metrics / history when given)."""
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _atomic_write(folder / MODEL_FILE, lambda tmp: save_file(state, tmp))
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model.config.to_dict(),
        "train": train_config or {},
        "samples_seen": int(samples_seen),
        "density": model.density,
        "parameters": model.num_parameters(),
    }
    atomic_write_text(folder / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
    if metrics is not None:
        atomic_write_text(folder / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    if history is not None:
        atomic_write_text(folder / HISTORY_FILE, "".join(json.dumps(h) + "\n" for h in history))
    return folder


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the checkpoint is corrupt") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


def read_history(folder: str | Path) -> list[dict]:
    path = Path(folder) / HISTORY_FILE
    if not path.exists():
        return []
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path} line {i} is not valid JSON ({e})") from e
    return rows


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model from a checkpoint folder, in eval mode. Raises CheckpointError
    with the reason when the folder is missing, partial or corrupt."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    for name in (CONFIG_FILE, MODEL_FILE):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder} is not a complete checkpoint: {name} is missing")
    meta = _read_json(folder / CONFIG_FILE)
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{folder}: checkpoint format version {version!r}, this code reads {FORMAT_VERSION}")
    try:
        config = ModelConfig.from_dict(meta["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder}/{CONFIG_FILE}: invalid model config ({e})") from e
    try:
        state = load_file(folder / MODEL_FILE, device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{folder}/{MODEL_FILE} cannot be read ({e})") from e
    model = SparlingModel(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{folder}/{MODEL_FILE} does not match its config: {e}") from e
    model.to(device).eval()
    metrics = _read_json(folder / METRICS_FILE) if (folder / METRICS_FILE).exists() else None
    return Checkpoint(folder, model, config, meta, metrics, read_history(folder))


def save_train_state(folder: str | Path, state: dict) -> None:
    """The resumable state: plain tensors, numbers, strings, lists and dicts only."""
    _atomic_write(Path(folder) / TRAIN_STATE_FILE, lambda tmp: torch.save(state, tmp))


def load_train_state(folder: str | Path) -> dict | None:
    path = Path(folder) / TRAIN_STATE_FILE
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a truncated or foreign file
        raise CheckpointError(f"{path} cannot be loaded safely ({e})") from e
