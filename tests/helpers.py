"""Tiny configs and checkpoints shared by the tests."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from sparling_core.analysis.evaluate import evaluate
from sparling_core.checkpoint import save_checkpoint
from sparling_core.domains import digit_circle as dc
from sparling_core.models.sparling import (
    IGNORE,
    ModelConfig,
    SparlingModel,
    digit_circle_tiny,
    encode_labels,
)

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"


def tiny_config(**overrides) -> ModelConfig:
    config = digit_circle_tiny()
    for key, value in overrides.items():
        setattr(config, key, value)
    config.__post_init__()
    return config


def make_tiny_checkpoint(folder: Path, steps: int = 3, density: float = 0.01,
                         evaluate_n: int = 20, **overrides) -> Path:
    """Train a tiny model for a few steps at `density` and save it as a checkpoint folder
    (with metrics.json and a short history), as the trainer would."""
    torch.manual_seed(0)
    model = SparlingModel(tiny_config(initial_density=density, **overrides))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for step in range(steps):
        images, labels = dc.collate([dc.sample(step * 8 + i) for i in range(8)])
        inputs, targets = encode_labels(labels, model.config.max_digits)
        out = model(images, inputs)
        loss = F.cross_entropy(out.logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append({"samples": (step + 1) * 8, "loss": loss.item(), "accuracy": 0.0,
                        "density": density, "realised_density": density, "threshold": 1.0})
    model.eval()
    metrics = evaluate(model, n=evaluate_n) if evaluate_n else None
    return save_checkpoint(folder, model, samples_seen=steps * 8, metrics=metrics,
                           history=history)


def shared_tiny_checkpoint(tmp_path_factory) -> Path:
    """One tiny checkpoint per test session, shared by the modules that only read it."""
    shared = tmp_path_factory.getbasetemp() / "shared-checkpoints" / "tiny"
    if not (shared / "history.jsonl").exists():  # written last
        make_tiny_checkpoint(shared)
    return shared


@contextmanager
def live_service(checkpoints: Path, log: Path, **env: str) -> Iterator[str]:
    """The service as `uvicorn backend.main:app` on a free port of 127.0.0.1 over the
    folder of checkpoint folders `checkpoints` (no API key, one torch thread, channel
    summaries on 4 images; `env` adds SPARLING_* settings): yields its URL, stops it after."""
    from backend.process import free_port, start_server, stop_server

    port = free_port()
    env = {"SPARLING_CHECKPOINTS": str(checkpoints), "SPARLING_API_KEY": "",
           "SPARLING_CHANNEL_SUMMARY_N": "4", "OMP_NUM_THREADS": "1", **env}
    proc = start_server([sys.executable, "-m", "uvicorn", "backend.main:app", "--host",
                         "127.0.0.1", "--port", str(port)], env, log, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(proc)


def shipped_checkpoints(folder: Path, *names: str) -> Path:
    """`folder` holding copies of the shipped checkpoints `names` (a folder of checkpoint
    folders, as SPARLING_CHECKPOINTS wants; copies, since the service refuses symlinked
    checkpoint folders)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copytree(SHIPPED / name, folder / name, dirs_exist_ok=True)
    return folder
