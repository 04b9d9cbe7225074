import importlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import tiny_config

from sparling_core.analysis.evaluate import Validation, evaluate
from sparling_core.checkpoint import load_checkpoint, load_train_state
from sparling_core.models.sparling import ModelConfig, SparlingModel
from sparling_core.training.loop import TrainConfig, learning_rate, train


def _config(out, **kw) -> TrainConfig:
    base = dict(out=str(out), model=tiny_config(), batch_size=4, val_every=8, val_size=8,
                max_samples=24, decay_per_sample=0.0, initial_threshold=0.0,
                bf16=False, channels_last=False, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_loop_schedule_checkpoint_and_evaluate(tmp_path):
    folder = train(_config(tmp_path / "run"), progress=False)
    ckpt = load_checkpoint(folder)
    assert ckpt.meta["samples_seen"] == 24
    assert [h["samples"] for h in ckpt.history] == [8, 16, 24]
    assert {"loss", "accuracy", "density", "realised_density", "threshold"} <= set(ckpt.history[0])
    # every row says where its wall time was measured
    assert {(h["device"], h["threads"], h["world_size"]) for h in ckpt.history} == {("cpu", 1, 1)}
    # threshold 0 and no decay: any accuracy > 0 lowers the density; 0 never does
    lowered = sum(h["lowered"] for h in ckpt.history)
    assert ckpt.model.density == 0.5 * 0.75**lowered
    report = evaluate(ckpt.model, n=6)
    assert {"fpe", "fne", "ce", "e2ee", "density", "density_ratio", "n"} <= set(report)


def test_schedule_anneals_and_stops_at_target(tmp_path, monkeypatch):
    # a perfect validation accuracy beats the decayed threshold every time: each validation
    # lowers the density, and the target is three steps away
    train_module = importlib.import_module("sparling_core.training.loop")  # the module, not train()

    monkeypatch.setattr(train_module, "validate",
                        lambda m, x, y, *a, **k: Validation(1.0, 0.1, torch.zeros(len(y), 1)))
    cfg = _config(tmp_path / "run", initial_threshold=1.0, decay_per_sample=1e-3,
                  max_samples=400, target_density=0.5 * 0.75**3)
    folder = train(cfg, progress=False)
    ckpt = load_checkpoint(folder)
    assert ckpt.meta["samples_seen"] == 24  # three validations, then done
    assert abs(ckpt.model.density - 0.5 * 0.75**3) < 1e-12


def test_resume_takes_the_configs_target_density(tmp_path, monkeypatch):
    """The target is where the run goes: a resume with another target_density stops there,
    not at the saved run's (the density walk itself continues where it was)."""
    train_module = importlib.import_module("sparling_core.training.loop")
    monkeypatch.setattr(train_module, "validate",
                        lambda m, x, y, *a, **k: Validation(1.0, 0.1, torch.zeros(len(y), 1)))
    common = dict(initial_threshold=1.0, decay_per_sample=1e-3)
    train(_config(tmp_path / "run", max_samples=16, target_density=0.5 * 0.75**6, **common),
          progress=False)  # two validations: density 0.5 * 0.75**2
    folder = train(_config(tmp_path / "run", max_samples=400, target_density=0.5 * 0.75**3,
                           **common), resume=True, progress=False)
    ckpt = load_checkpoint(folder)
    assert ckpt.meta["samples_seen"] == 24  # one more cut reaches the new target
    assert abs(ckpt.model.density - 0.5 * 0.75**3) < 1e-12


def test_resume_continues_exactly(tmp_path):
    full = train(_config(tmp_path / "full", max_samples=32), progress=False)
    part = train(_config(tmp_path / "part", max_samples=16), progress=False)
    resumed = train(_config(tmp_path / "part", max_samples=32), resume=True, progress=False)
    a, b = load_checkpoint(full).model.state_dict(), load_checkpoint(resumed).model.state_dict()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key
    assert part == resumed
    assert [h["samples"] for h in load_checkpoint(resumed).history] == [8, 16, 24, 32]


def test_sigkill_then_resume(tmp_path):
    out = tmp_path / "killed"
    cfg = _config(out, max_samples=100_000, val_every=4).to_dict()
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    cmd = [sys.executable, "-m", "sparling_core.cli", "train", "--config",
           str(tmp_path / "cfg.json"), "--no-progress"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            state = out / "train_state.pt"
            if state.exists() and load_train_state(out)["samples_seen"] >= 12:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("training never checkpointed")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = load_train_state(out)["samples_seen"]
    assert saved >= 12
    load_checkpoint(out)  # the folder is whole after a kill
    cfg["max_samples"] = saved + 8
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ckpt = load_checkpoint(out)
    assert ckpt.meta["samples_seen"] == saved + 8
    samples = [h["samples"] for h in ckpt.history]
    assert samples == sorted(set(samples)) and samples[-1] == saved + 8


def test_finish_samples_hold_the_target_density(tmp_path, monkeypatch):
    train_module = importlib.import_module("sparling_core.training.loop")  # the module, not train()

    monkeypatch.setattr(train_module, "validate",
                        lambda m, x, y, *a, **k: Validation(1.0, 0.1, torch.zeros(len(y), 1)))
    cfg = _config(tmp_path / "run", initial_threshold=1.0, decay_per_sample=1e-3,
                  max_samples=400, target_density=0.5 * 0.75**2, finish_samples=16)
    ckpt = load_checkpoint(train(cfg, progress=False))
    assert ckpt.meta["samples_seen"] == 16 + 16  # target after two validations, then 16 more
    assert [h["lowered"] for h in ckpt.history] == [True, True, False, False]
    assert abs(ckpt.model.density - 0.5 * 0.75**2) < 1e-12


def test_learning_rate_follows_a_cosine_over_the_finish_phase():
    cfg = TrainConfig(lr=2e-3, finish_samples=100, finish_lr=0.1)
    assert learning_rate(cfg, 5_000, None) == 2e-3  # not at the target yet
    assert learning_rate(cfg, 1_000, 1_000) == pytest.approx(2e-3)
    assert learning_rate(cfg, 1_050, 1_000) == pytest.approx(2e-3 * 0.55)
    assert learning_rate(cfg, 1_100, 1_000) == pytest.approx(2e-4)
    assert learning_rate(cfg, 1_500, 1_000) == pytest.approx(2e-4)  # held past the end
    assert learning_rate(TrainConfig(lr=2e-3, finish_samples=100), 1_050, 1_000) == 2e-3
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="finish_lr"):
            TrainConfig(finish_lr=bad)


def test_finish_lr_reaches_the_optimizer_during_the_finish_phase(tmp_path, monkeypatch):
    train_module = importlib.import_module("sparling_core.training.loop")
    monkeypatch.setattr(train_module, "validate",
                        lambda m, x, y, *a, **k: Validation(1.0, 0.1, torch.zeros(len(y), 1)))
    cfg = _config(tmp_path / "run", initial_threshold=1.0, decay_per_sample=1e-3, lr=1e-3,
                  max_samples=400, target_density=0.5 * 0.75**2, finish_samples=16,
                  finish_lr=0.1)
    out = train(cfg, progress=False)
    rates = [h["lr"] for h in load_checkpoint(out).history]
    # the target is reached at 16 samples; the last steps before the validations at 24 and
    # 32 start at 20 and 28 samples: a quarter and three quarters through the finish
    quarter = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))
    three_quarters = 0.1 + 0.9 * 0.5 * (1 + math.cos(3 * math.pi / 4))
    assert rates == pytest.approx([1e-3, 1e-3, 1e-3 * quarter, 1e-3 * three_quarters])
    saved = load_train_state(out)["optimizer"]["param_groups"][0]["lr"]
    assert saved == pytest.approx(1e-3 * three_quarters)


def test_finish_phase_tied_ties_the_motif_model_when_the_finish_begins(tmp_path, monkeypatch):
    """An untied model anneals untied and trains the finish phase-tied: the checkpoint says
    phase_tied, loads as a tied model with the same weights, and a run stopped inside the
    finish and resumed ends with exactly the weights of an uninterrupted one."""
    train_module = importlib.import_module("sparling_core.training.loop")
    monkeypatch.setattr(train_module, "validate",
                        lambda m, x, y, *a, **k: Validation(1.0, 0.1, torch.zeros(len(y), 1)))
    kw = dict(initial_threshold=1.0, decay_per_sample=1e-3, max_samples=400,
              target_density=0.5 * 0.75**2, finish_samples=16, finish_phase_tied=True)
    assert not tiny_config().phase_tied
    tied_at = []
    real_tie = train_module.SparlingModel.tie_phases

    def spy(model, *args):
        tied_at.append(model.motif_model.phase_tied)
        return real_tie(model, *args)

    monkeypatch.setattr(train_module.SparlingModel, "tie_phases", spy)
    whole = load_checkpoint(train(_config(tmp_path / "whole", **kw), progress=False))
    assert tied_at == [False]  # once, at the finish's start (16 samples), from untied
    assert whole.meta["samples_seen"] == 32 and whole.config.phase_tied
    assert whole.model.motif_model.phase_tied
    saved = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert saved["model"]["phase_tied"] and not saved["train"]["model"]["phase_tied"]
    # stopped 8 samples into the finish, then resumed: tied again on load, the same result
    part = _config(tmp_path / "part", **{**kw, "max_samples": 24})
    train(part, progress=False)
    assert load_checkpoint(tmp_path / "part").config.phase_tied
    train(_config(tmp_path / "part", **kw), resume=True, progress=False)
    resumed = load_checkpoint(tmp_path / "part")
    assert resumed.meta["samples_seen"] == 32 and resumed.model.motif_model.phase_tied
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    # a run whose finish began untied, resumed with finish_phase_tied: tied then, at each
    # channel's phase (not the silencing phase-(0, 0) tie)
    tied_at.clear()
    train(_config(tmp_path / "late", **{**kw, "max_samples": 24, "finish_phase_tied": False}),
          progress=False)
    assert not load_checkpoint(tmp_path / "late").config.phase_tied and tied_at == []
    train(_config(tmp_path / "late", **kw), resume=True, progress=False)
    assert tied_at == [False] and load_checkpoint(tmp_path / "late").config.phase_tied
    with pytest.raises(ValueError, match="phase_tied must be false"):
        TrainConfig(model=ModelConfig(phase_tied=True), finish_phase_tied=True)


def test_tie_phases_keeps_the_phase_each_channel_fires_at():
    """dominant_phases counts each channel's activations by sub-pixel phase; tie_phases(
    phases) then answers everywhere with that phase's head row: the tied map at even pixels
    is the untied map at the channel's phase (a shift of at most 1 px). The Adam moments
    of the head move with its rows."""
    from sparling_core.training.loop import _tie_phases

    torch.manual_seed(0)
    model = SparlingModel(tiny_config())
    images = torch.rand(6, 1, *model.config.image_shape)
    model.eval()
    with torch.no_grad():
        active = model.bottleneck.active(model.sparse_motifs(images))
    counts = torch.stack([active[:, :, a::2, b::2].sum(dim=(0, 2, 3))
                          for a in (0, 1) for b in (0, 1)], dim=1)
    assert model.dominant_phases(images, batch_size=4) == counts.argmax(dim=1).tolist()
    assert not model.training
    # one Adam step, so that the head has moments; then tie at phases that move every row
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    model.motif_model(images).square().mean().backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        untied = model.motif_model(images)
    head = model.motif_model.head
    weight, moment = head.weight.detach().clone(), optimizer.state[head.weight]["exp_avg"].clone()
    phases = [(c + 1) % 4 for c in range(model.config.motif_channels)]
    model.dominant_phases = lambda _images: phases
    _tie_phases(model, optimizer, images, rank=0)
    assert model.config.phase_tied and model.motif_model.phase_tied
    rows = [4 * c + k for c, k in enumerate(phases)]
    assert torch.equal(head.weight[0::4], weight[rows])
    assert torch.equal(optimizer.state[head.weight]["exp_avg"][0::4], moment[rows])
    with torch.no_grad():
        tied = model.motif_model(images)
    for c, k in enumerate(phases):
        a, b = divmod(k, 2)
        assert torch.allclose(tied[:, c, 0::2, 0::2], untied[:, c, a::2, b::2], atol=1e-5)
    with pytest.raises(ValueError, match="phases must be"):
        SparlingModel(tiny_config()).tie_phases([0])


def test_bf16_auto_follows_the_hardware(monkeypatch):
    """bf16 None (auto): on for CUDA and for CPUs with native bf16 (AMX / AVX512-BF16),
    off on other CPUs, where emulated bf16 made a step 6x slower; an explicit value wins."""
    from sparling_core.training import loop

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(loop, "cpu_has_fast_bf16", lambda: False)
    assert loop.use_bf16(TrainConfig(), cpu) is False
    assert loop.use_bf16(TrainConfig(), cuda) is True
    assert loop.use_bf16(TrainConfig(bf16=True), cpu) is True
    monkeypatch.setattr(loop, "cpu_has_fast_bf16", lambda: True)
    assert loop.use_bf16(TrainConfig(), cpu) is True
    assert loop.use_bf16(TrainConfig(bf16=False), cpu) is False


def test_trunk_presence_head_trains_and_resumes(tmp_path):
    """With trunk_presence_weight the loop trains the trunk head (its weights move), saves
    it with the checkpoint, and a resume continues exactly."""
    model = tiny_config(trunk_presence_weight=1.0, presence_pool="max+mean")
    full = train(_config(tmp_path / "full", model=model, max_samples=16), progress=False)
    part = train(_config(tmp_path / "part", model=model, max_samples=8), progress=False)
    ckpt, early = load_checkpoint(full), load_checkpoint(part)
    trained = ckpt.model.motif_model.trunk_presence.weight
    assert not torch.allclose(trained, early.model.motif_model.trunk_presence.weight)
    resumed = train(_config(tmp_path / "part", model=model, max_samples=16), resume=True,
                    progress=False)
    a, b = ckpt.model.state_dict(), load_checkpoint(resumed).model.state_dict()
    assert a.keys() == b.keys() and "motif_model.trunk_presence.weight" in a
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parent.parent / "configs")
                                        .glob("*.json")), ids=lambda p: p.stem)
def test_every_shipped_config_builds_a_train_config_and_its_model(path):
    """Every recipe in configs/ parses into a TrainConfig (no unknown or mistyped field)
    whose model builds."""
    from sparling_core.models.sparling import SparlingModel
    from sparling_core.training.loop import build_train_config, read_config_file

    config = build_train_config(read_config_file(path))
    assert config.out and config.batch_size >= 1
    SparlingModel(config.model)


def test_resume_compares_settings_an_older_checkpoint_lacks_with_their_defaults(tmp_path):
    """A run saved before a model setting existed had that setting's default: resuming it
    with the default works, with another value is a one-line CheckpointError naming it
    (not a state_dict error from deep inside torch)."""
    from sparling_core.checkpoint import CheckpointError

    out = tmp_path / "run"
    base = dict(out=str(out), batch_size=4, val_every=8, val_size=4, bf16=False,
                channels_last=False, threads=1)
    model = {**tiny_config().to_dict(), "decoder": "points"}
    train(TrainConfig(model=model, max_samples=8, **base), progress=False)
    saved = json.loads((out / "config.json").read_text())
    del saved["model"]["point_encoder"]  # as written before the setting existed
    (out / "config.json").write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match="point_encoder: saved 'set', now 'relative'"):
        train(TrainConfig(model={**model, "point_encoder": "relative"}, max_samples=16,
                          **base), resume=True, progress=False)
    train(TrainConfig(model=model, max_samples=16, **base), resume=True, progress=False)
    assert load_train_state(out)["samples_seen"] == 16
