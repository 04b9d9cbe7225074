"""Checkpoint folders: safe to load, written atomically.

    checkpoints/NAME/
      model.safetensors   weights, sparsity thresholds and level, BatchNorm statistics
      config.json         format version, model config, training config, samples seen
      metrics.json        the latest evaluation (may be absent before one)
      history.jsonl       one JSON object per validation during training
      train_state.pt      resumable state (optimizer, schedule, RNG, data position, weights);
                          optional: shipped copies may omit it

Nothing is unpickled: weights come from safetensors, the training state through
`torch.load(weights_only=True)`.

A save is one generation, all files or none: they are written into a fresh sibling folder
`.NAME.tmp-*`, which then replaces NAME by two renames (NAME -> `.NAME.old-*`, the new
folder -> NAME). A kill between the two leaves no NAME but the complete previous
generation, which the next save or load (`recover`) renames back; stale temporary folders
and files are removed then. Other files in the folder (an evaluation report) are carried
into the new generation; metrics.json is not (it described the previous weights).

Reading is safe against hostile folders: every file is opened inside the folder with
O_NOFOLLOW | O_NONBLOCK (a symbolic link is refused, a FIFO never blocks) and must be a
regular file no larger than its cap; the model config is type- and bounds-checked before
any tensor is allocated.
"""

from __future__ import annotations

import errno
import glob
import io
import json
import os
import shutil
import stat
import tempfile
import uuid
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
    "recover",
    "read_config",
    "holds_checkpoint",
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


GENERATION_FILES = (MODEL_FILE, CONFIG_FILE, METRICS_FILE, HISTORY_FILE, TRAIN_STATE_FILE)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover(folder: str | Path) -> None:
    """Finish what a killed save left: bring back the previous generation when NAME is
    missing, and remove temporary folders and files."""
    folder = Path(folder)
    parent, pattern = folder.parent, glob.escape(f".{folder.name}.")
    if not parent.is_dir():
        return
    olds = sorted(parent.glob(pattern + "old-*"), key=lambda p: p.stat().st_mtime)
    if not folder.exists() and olds:
        os.rename(olds.pop(), folder)
    for stale in [*olds, *parent.glob(pattern + "tmp-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    if folder.is_dir():
        for stale in folder.glob(".*.tmp"):  # the per-file temporaries of older versions
            stale.unlink(missing_ok=True)


def holds_checkpoint(folder: str | Path) -> bool:
    """Whether `folder` has (part of) a checkpoint in it."""
    folder = Path(folder)
    return any((folder / name).exists() for name in (CONFIG_FILE, MODEL_FILE, TRAIN_STATE_FILE))


def _write_generation(folder: Path, writers: dict, carry_over: bool) -> None:
    """Write `writers` ({file name: write(path)}) as one new generation of `folder`."""
    recover(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; checkpoints are read by other users
        if carry_over and folder.is_dir():
            for entry in folder.iterdir():
                if (entry.name in GENERATION_FILES or entry.name.startswith(".")
                        or entry.is_symlink() or not entry.is_file()):
                    continue
                shutil.copy2(entry, tmp / entry.name)
        for name, write in writers.items():
            write(str(tmp / name))
            with open(tmp / name, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp / name, 0o644)
        _fsync_dir(tmp)
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(folder, old)
            os.rename(tmp, folder)
            _fsync_dir(folder.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, folder)
            _fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_checkpoint(folder: str | Path, model: SparlingModel, *, samples_seen: int = 0,
                    train_config: dict | None = None, metrics: dict | None = None,
                    history: list[dict] | None = None, train_state: dict | None = None,
                    carry_over: bool = True) -> Path:
    """Write model.safetensors and config.json (and metrics, history and the training
    state when given) as one generation: all of them or none. `carry_over`: keep the
    folder's other files (not the checkpoint's own)."""
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    writers = {MODEL_FILE: lambda tmp: save_file(state, tmp)}
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model.config.to_dict(),
        "train": train_config or {},
        "samples_seen": int(samples_seen),
        "density": model.density,
        "parameters": model.num_parameters(),
    }
    texts = {CONFIG_FILE: json.dumps(meta, indent=2) + "\n"}
    if metrics is not None:
        texts[METRICS_FILE] = json.dumps(metrics, indent=2) + "\n"
    if history is not None:
        texts[HISTORY_FILE] = "".join(json.dumps(h) + "\n" for h in history)
    for name, text in texts.items():
        writers[name] = lambda tmp, text=text: Path(tmp).write_text(text)
    if train_state is not None:
        writers[TRAIN_STATE_FILE] = lambda tmp: torch.save(train_state, tmp)
    _write_generation(folder, writers, carry_over)
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


def read_config(folder: str | Path) -> dict:
    """config.json of `folder` ({} when absent)."""
    return _read_json(Path(folder), CONFIG_FILE) or {}


def save_train_state(folder: str | Path, state: dict) -> None:
    """The resumable state alone (the trainer saves it with the checkpoint, as one
    generation: save_checkpoint(train_state=...)): plain tensors, numbers, strings, lists
    and dicts only."""
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
