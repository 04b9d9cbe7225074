import json

import pytest
import torch
from helpers import make_tiny_checkpoint

from sparling_core.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_train_state,
    save_train_state,
)
from sparling_core.domains import digit_circle as dc


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", evaluate_n=5)


def test_round_trip_gives_identical_outputs(folder, tmp_path):
    a = load_checkpoint(folder)
    b = load_checkpoint(folder)
    assert not a.model.training
    images, _ = dc.collate([dc.sample(s) for s in range(4)])
    da, db = a.model.generate(images), b.model.generate(images)
    assert torch.equal(da.motifs, db.motifs) and da.sequences == db.sequences
    assert a.meta["format_version"] == 1 and a.meta["samples_seen"] == 24
    assert a.metrics["n"] == 5 and len(a.history) == 3
    state = a.model.state_dict()
    assert "bottleneck.thresholds" in state and "bottleneck.batch_norm.running_var" in state
    assert float(state["bottleneck.sparsity"]) == pytest.approx(0.99)


def _copy(folder, tmp_path):
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


def test_missing_folder_and_files(folder, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    broken = _copy(folder, tmp_path)
    (broken / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_checkpoint(broken)


def test_corrupt_weights_and_config(folder, tmp_path):
    broken = _copy(folder, tmp_path)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(broken)
    broken2 = _copy(folder, tmp_path / "b")
    (broken2 / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(broken2)
    meta = json.loads((folder / "config.json").read_text())
    meta["model"]["motif_width"] = 99  # weights no longer fit
    (broken2 / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(broken2)
    meta["model"] = {"nonsense": 1}
    (broken2 / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="invalid model config"):
        load_checkpoint(broken2)
    meta["format_version"] = 99
    (broken2 / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version"):
        load_checkpoint(broken2)


def test_train_state_refuses_pickled_objects(tmp_path):
    save_train_state(tmp_path, {"samples_seen": 3, "t": torch.ones(2)})
    assert load_train_state(tmp_path)["samples_seen"] == 3

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "train_state.pt")
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_train_state(tmp_path)
    assert load_train_state(tmp_path / "empty") is None


def test_files_are_readable_by_others(folder):
    for path in folder.iterdir():
        assert path.stat().st_mode & 0o044 == 0o044, path
    assert not list(folder.glob("*.tmp"))
