"""Issue 16: checkpoint folders read safely (items 5) and written as one generation (8)."""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from helpers import shared_tiny_checkpoint  # noqa: E402

from sparling_core.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from sparling_core.models.sparling import ModelConfig  # noqa: E402


@pytest.mark.parametrize("field, value, message", [
    ("image_size", 100.0, "image_size must be an integer"),
    ("image_size", [100, 100.0], "image_size must be an integer"),
    ("image_size", True, "image_size must be an integer"),
    ("image_size", 10**6, "image_size must be in"),
    ("motif_channels", 10.0, "motif_channels must be an integer"),
    ("motif_channels", False, "motif_channels must be an integer"),
    ("motif_channels", 0, "motif_channels must be in"),
    ("d_model", 10**9, "d_model must be in"),
    ("n_heads", "4", "n_heads must be an integer"),
    ("initial_density", float("nan"), "initial_density must be a finite number"),
    ("initial_density", "0.5", "initial_density must be a number"),
    ("presence_weight", True, "presence_weight must be a number"),
    ("phase_tied", 1, "phase_tied must be true or false"),
    ("sparsity", 5, "sparsity must be a non-empty string"),
    ("accumulate_survivors", float("inf"), "accumulate_survivors must be a finite number"),
])
def test_model_config_checks_types_and_bounds(field, value, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_dict({field: value})


def test_model_config_still_takes_what_it_took():
    assert ModelConfig.from_dict({"image_size": [100, 100], "penalty_weight": 1}).image_shape \
        == (100, 100)
    assert ModelConfig.from_dict({"initial_density": 1}).initial_density == 1


@pytest.fixture
def tiny(tmp_path_factory, tmp_path):
    import shutil

    folder = tmp_path / "tiny"
    shutil.copytree(shared_tiny_checkpoint(tmp_path_factory), folder)
    return folder


def test_symlinked_files_are_refused(tiny, tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text('{"secret": 1}')
    (tiny / "metrics.json").unlink()
    (tiny / "metrics.json").symlink_to(outside)
    with pytest.raises(CheckpointError, match="symbolic link"):
        load_checkpoint(tiny)


def test_a_fifo_never_blocks(tiny):
    (tiny / "history.jsonl").unlink()
    os.mkfifo(tiny / "history.jsonl")
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(tiny)  # returns at once: opened with O_NONBLOCK, then refused
