"""Two gloo processes on CPU against one process holding the global batch.

One spawn of 2 ranks (127.0.0.1, a free port) runs everything in tests/ddp_workers.py and
saves what it computed; the tests compare it with this (non-distributed) process.

Tolerances. The sparsity layer: thresholds, outputs, input gradients and BatchNorm
statistics to 1e-6 relative (to the largest magnitude of each tensor); BatchNorm's weight
and bias gradients to 1e-5: each is a sum of 80,000 float32 products, which torch's own
BatchNorm backward (the one-process reference) accumulates in float32 (measured: up to
1.3e-6 from a float64 sum, depending on its thread count). The selections are exact; what
differs is the BatchNorm arithmetic (its sums are float64 over ranks, torch's own kernel
sums float32 in its own order): a few float32 ulps (measured: thresholds <= 2e-7, outputs
<= 2e-7 relative). A value within those ulps of its threshold can fall on the other side:
its output is ~1e-7 either way, but its gradient is w or 0, which moves the BatchNorm
parameter gradients by O(1) / sqrt(active count). In a step where that happens (a few of
the 24 layer steps), the input gradients are compared away from those values at 1e-5 and
the parameter gradients not at all.

Training: losses and thresholds to 1e-5 relative, weights to 1e-5 absolute after 6 Adam
steps, and the same schedule and resampling decisions (measured: losses 1e-7 relative,
weights 1e-8). Every sum the two runs take (the gradient all-reduce, BatchNorm's
statistics, the loss over two halves) is ordered differently, so they part by float32
rounding from the first step. One exception: the key part of each attention's in_proj_bias.
Its gradient is zero in exact arithmetic (softmax ignores a shift shared by all keys), so
both runs hold rounding noise (~1e-10) there, which Adam normalises into steps of +-lr in
directions that differ between the runs: those entries are held to 6 steps x lr. Ranks must
agree with each other exactly. fp32: bf16 autocast would compare bf16 rounding of
differently batched convs instead.
"""

from __future__ import annotations

import time
from pathlib import Path

import ddp_workers as w
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sparling_core.checkpoint import load_checkpoint, load_train_state
from sparling_core.training.distributed import free_port
from sparling_core.training.loop import train

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

WORLD = 2
TIMEOUT_S = 120


def _close(a: torch.Tensor, b: torch.Tensor, rel: float) -> bool:
    """|a - b| <= rel * max |b| everywhere."""
    scale = b.abs().max().clamp_min(1e-30)
    return bool(((a - b).abs() <= rel * scale).all())


def _interleave(parts: list[torch.Tensor]) -> torch.Tensor:
    """Rank r held samples r, r + W, ...: put them back in global order."""
    world = len(parts)
    out = torch.empty((sum(p.shape[0] for p in parts), *parts[0].shape[1:]), dtype=parts[0].dtype)
    for r, p in enumerate(parts):
        out[r::world] = p
    return out


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> dict:
    """The 2 ranks' results; meanwhile (they take seconds to import torch) this process
    computes the single-process references."""
    out = tmp_path_factory.mktemp("ddp")
    start = time.perf_counter()
    context = mp.start_processes(w.worker, args=(WORLD, free_port(), str(out)), nprocs=WORLD,
                                 join=False, start_method="spawn")
    single: dict = {}
    try:
        inputs = w.layer_inputs()
        single["layer"] = {(kind, density): w.run_layer(kind, density, inputs)
                           for kind in w.KINDS for density in w.DENSITIES}
        single["train"] = load_checkpoint(train(w.train_config(out / "single"), progress=False))
        single["tied"] = load_checkpoint(train(w.train_config(out / "single-tied", **w.TIED),
                                               progress=False))
        deadline = time.monotonic() + TIMEOUT_S
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                raise AssertionError(f"the {WORLD} ranks did not finish in {TIMEOUT_S} s")
    finally:
        for process in context.processes:  # none is left behind, finished or not
            if process.is_alive():
                process.kill()
            process.join()
    results = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    print(f"\n{WORLD} ranks: {time.perf_counter() - start:.1f} s in all; rank 0 "
          + ", ".join(f"{k} {v:.1f} s" for k, v in results[0]["timing"].items()))
    return {"out": out, "results": results, "single": single}


@pytest.mark.parametrize("method", w.METHODS)
@pytest.mark.parametrize("kind", w.KINDS)
@pytest.mark.parametrize("density", w.DENSITIES)
def test_layer_matches_one_process_on_the_global_batch(ranks, method, kind, density):
    one = ranks["single"]["layer"][kind, density]
    per_rank = [r["layer"][method, kind, density] for r in ranks["results"]]
    for step in range(w.STEPS):
        t0 = per_rank[0]["thresholds"][step]
        for other in per_rank[1:]:  # every rank holds the same thresholds, bit for bit
            assert torch.equal(other["thresholds"][step], t0)
        assert _close(t0, one["thresholds"][step], 1e-6), (step, t0, one["thresholds"][step])
        y = _interleave([p["y"][step] for p in per_rank])
        assert _close(y, one["y"][step], 1e-6)
        # values on the threshold, within float32 rounding: output ~0 on either side
        edge = (y > 0) != (one["y"][step] > 0)
        assert edge.sum() <= 3
        assert (y[edge].abs() <= 1e-6 * y.abs().max()).all()
        assert (one["y"][step][edge].abs() <= 1e-6 * y.abs().max()).all()
        grad = _interleave([p["grad_x"][step] for p in per_rank])
        if not edge.any():
            assert _close(grad, one["grad_x"][step], 1e-6)
            for key in ("grad_weight", "grad_bias"):  # DDP would average these over ranks
                # sums of 10^5 products, reduced in another order over two ranks: float32
                # agrees to about 1e-6 relative, not always within it
                assert _close(sum(p[key][step] for p in per_rank), one[key][step], 1e-5), key
        else:
            assert _close(grad[~edge], one["grad_x"][step][~edge], 1e-5)
    for key in ("running_mean", "running_var"):
        assert torch.equal(per_rank[0][key], per_rank[1][key])
        assert _close(per_rank[0][key], one[key], 1e-6), key


def test_training_matches_one_process_with_the_global_batch(ranks):
    """2 ranks x 4 samples, stopped at 32 samples and resumed, against 1 process x 8."""
    single = ranks["single"]["train"]
    ddp = load_checkpoint(ranks["out"] / "ddp")
    assert ranks["results"][0]["at_32"] == 32
    assert ddp.meta["samples_seen"] == single.meta["samples_seen"] == 48
    assert [h["samples"] for h in ddp.history] == [16, 32, 48]
    assert [h["density"] for h in ddp.history] == [h["density"] for h in single.history]
    assert [h["density"] for h in ddp.history] == pytest.approx([5e-3, 5e-5, 5e-7])
    # the same resampling decisions (rank 0 plans them and broadcasts)
    assert ddp.history[0]["resampled"], "the test meant to cover a resample"
    assert [h["resampled"] for h in ddp.history] == [h["resampled"] for h in single.history]
    for a, b in zip(ddp.history, single.history, strict=True):
        for key in ("loss", "sequence_loss", "presence_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), (a["samples"], key)
        assert a["accuracy"] == b["accuracy"]
        assert a["realised_density"] == pytest.approx(b["realised_density"], rel=0.05,
                                                      abs=1e-5)
    t_ddp, t_one = ddp.model.bottleneck.thresholds, single.model.bottleneck.thresholds
    assert _close(t_ddp, t_one, 1e-5), (t_ddp, t_one)
    a, b = ddp.model.state_dict(), single.model.state_dict()
    lr, steps = 1e-3, 6
    for key in a:
        diff = (a[key].float() - b[key].float()).abs()
        if key.endswith("in_proj_bias"):  # query, key, value: the key part has no gradient
            q, k, v = diff.view(3, -1)
            assert k.max() <= steps * lr * 1.01, key
            diff = torch.cat([q, v])
        assert diff.max() < 1e-5, (key, float(diff.max()))


def test_validation_gathers_every_ranks_share_in_image_order(ranks):
    """Accuracy, density and the per-image channel peaks (what detector coverage is read
    from) of 2 ranks' shares equal one process's on all the images."""
    accuracy, realised, peaks = w.validation(ranks["out"] / "ddp")
    assert peaks.shape == (w.VALIDATION_IMAGES, 10) and peaks.abs().sum() > 0
    for got in (r["validation"] for r in ranks["results"]):
        assert got[0] == accuracy and got[1] == pytest.approx(realised, rel=1e-9)
        assert torch.equal(got[2], peaks)


def test_finish_phase_tied_matches_one_process(ranks):
    """An untied model tied when its finish begins (every rank picks the same phases from the
    validation images and permutes the same rows) trains on like one process."""
    single, ddp = ranks["single"]["tied"], load_checkpoint(ranks["out"] / "ddp-tied")
    assert ddp.meta["samples_seen"] == single.meta["samples_seen"] == 64
    assert ddp.config.phase_tied and single.config.phase_tied
    assert ddp.model.motif_model.phase_tied
    assert [h["density"] for h in ddp.history] == [h["density"] for h in single.history]
    assert [h["resampled"] for h in ddp.history] == [h["resampled"] for h in single.history]
    for a, b in zip(ddp.history, single.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), a["samples"]
    a, b = ddp.model.state_dict(), single.model.state_dict()
    for key in a:
        diff = (a[key].float() - b[key].float()).abs()
        if key.endswith("in_proj_bias"):  # see test_training_matches_one_process_...
            q, k, v = diff.view(3, -1)
            assert k.max() <= 8 * 1e-3 * 1.01, key
            diff = torch.cat([q, v])
        assert diff.max() < 1e-5, (key, float(diff.max()))


def test_only_rank_zero_wrote(ranks):
    names = sorted(p.name for p in Path(ranks["out"]).iterdir())
    assert names == ["ddp", "ddp-tied", "rank0.pt", "rank1.pt", "single", "single-tied"]
    for run in ("ddp", "ddp-tied"):
        assert not list(Path(ranks["out"], run).glob(".*.tmp"))
    assert load_train_state(ranks["out"] / "ddp")["samples_seen"] == 48


def test_cli_checks_nproc_against_the_batch(tmp_path):
    from typer.testing import CliRunner

    from sparling_core.cli import app

    result = CliRunner().invoke(app, ["train", "--model-size", "tiny", "--nproc", "2",
                                      "--batch-size", "3", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "must be divisible by --nproc 2" in result.output
    result = CliRunner().invoke(app, ["train", "--model-size", "tiny", "--device", "tpu",
                                      "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "device must be" in result.output


@pytest.mark.slow
def test_cli_nproc_starts_workers_and_resumes(tmp_path):
    """`sparling train --nproc 2` through torch's elastic launcher, then --resume."""
    import subprocess
    import sys

    out = tmp_path / "run"
    command = [sys.executable, "-m", "sparling_core.cli", "train", "--model-size", "tiny",
               "--nproc", "2", "--batch-size", "4", "--val-every", "8", "--val-size", "4",
               "--out", str(out), "--no-progress"]
    done = subprocess.run(command + ["--max-samples", "8"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert load_train_state(out)["samples_seen"] == 8
    done = subprocess.run(command + ["--max-samples", "16", "--resume"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [h["samples"] for h in load_checkpoint(out).history] == [8, 16]
