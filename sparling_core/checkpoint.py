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

Reading is safe against hostile folders: every file is opened inside the folder with
O_NOFOLLOW | O_NONBLOCK (a symbolic link is refused, a FIFO never blocks) and must be a
regular file no larger than its cap; the model config is type- and bounds-checked before
any tensor is allocated.
"""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

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


# the most a file of a checkpoint may hold; larger files are refused unread
MAX_FILE_BYTES = {MODEL_FILE: 2 * 2**30, TRAIN_STATE_FILE: 4 * 2**30}
MAX_TEXT_BYTES = 64 * 2**20  # config, metrics, history


class CheckpointError(ValueError):
    """A checkpoint folder is missing, partial or corrupt."""


def _read_file(folder: Path, name: str) -> bytes | None:
    """The bytes of FOLDER/NAME, or None when it does not exist. Refuses (CheckpointError) a
    symbolic link, anything that is not a regular file (a FIFO, a device, a folder) and a
    file over its size cap, without blocking or reading it."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CheckpointError(f"{folder} cannot be opened as a folder ({e.strerror})") from e
    try:
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise CheckpointError(f"{folder}/{name} is a symbolic link; checkpoint files "
                                      "must be regular files inside the folder") from e
            raise CheckpointError(f"{folder}/{name} cannot be opened ({e.strerror})") from e
    finally:
        os.close(dir_fd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise CheckpointError(f"{folder}/{name} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        limit = MAX_FILE_BYTES.get(name, MAX_TEXT_BYTES)
        if info.st_size > limit:
            raise CheckpointError(f"{folder}/{name} is {info.st_size} bytes, more than the "
                                  f"{limit} allowed")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise CheckpointError(f"{folder}/{name} is larger than the {limit} bytes allowed")
    return data


def _read_text(folder: Path, name: str) -> str | None:
    data = _read_file(folder, name)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{folder}/{name} is not UTF-8 text ({e})") from e


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


def _read_json(folder: Path, name: str) -> dict | None:
    text = _read_text(folder, name)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{folder}/{name} is not valid JSON ({e}); "
                              "the checkpoint is corrupt") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{folder}/{name} must hold a JSON object")
    return data


def read_history(folder: str | Path) -> list[dict]:
    folder = Path(folder)
    text = _read_text(folder, HISTORY_FILE)
    if text is None:
        return []
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except (json.JSONDecodeError, RecursionError) as e:
            raise CheckpointError(f"{folder}/{HISTORY_FILE} line {i} is not valid JSON "
                                  f"({e})") from e
    return rows


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model from a checkpoint folder, in eval mode. Raises CheckpointError
    with the reason when the folder is missing, partial or corrupt."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    meta = _read_json(folder, CONFIG_FILE)
    weights = _read_file(folder, MODEL_FILE) if meta is not None else None
    for name, data in ((CONFIG_FILE, meta), (MODEL_FILE, weights)):
        if data is None:
            raise CheckpointError(f"{folder} is not a complete checkpoint: {name} is missing")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{folder}: checkpoint format version {version!r}, this code reads {FORMAT_VERSION}")
    try:
        config = ModelConfig.from_dict(meta["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder}/{CONFIG_FILE}: invalid model config ({e})") from e
    try:
        state = load_safetensors(weights)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{folder}/{MODEL_FILE} cannot be read ({e})") from e
    del weights
    model = SparlingModel(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{folder}/{MODEL_FILE} does not match its config: {e}") from e
    model.to(device).eval()
    metrics = _read_json(folder, METRICS_FILE)
    return Checkpoint(folder, model, config, meta, metrics, read_history(folder))


def save_train_state(folder: str | Path, state: dict) -> None:
    """The resumable state: plain tensors, numbers, strings, lists and dicts only."""
    _atomic_write(Path(folder) / TRAIN_STATE_FILE, lambda tmp: torch.save(state, tmp))


def load_train_state(folder: str | Path) -> dict | None:
    data = _read_file(Path(folder), TRAIN_STATE_FILE)
    if data is None:
        return None
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a truncated or foreign file
        raise CheckpointError(f"{Path(folder) / TRAIN_STATE_FILE} cannot be loaded safely "
                              f"({e})") from e
