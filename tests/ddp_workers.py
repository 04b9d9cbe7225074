"""What each rank of tests/test_distributed.py runs (an importable module: the workers are
started with torch.multiprocessing's spawn, which imports their function by name).

Everything a rank computes is saved to OUT/rank{r}.pt; the test process compares it with a
single process on the global batch."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from sparling_core.layers import global_stats
from sparling_core.layers.sparsity import SpatialSparsity

CHANNELS = 10
GLOBAL_SHAPE = (8, CHANNELS, 100, 100)  # the global batch: 80,000 values per channel
STEPS = 2
DENSITIES = (0.5, 5e-3, 5e-5)
KINDS = ("mt", "st")
METHODS = ("gather", "radix")  # forced, to check both exact selections at every density


def layer_inputs(seed: int = 0) -> dict:
    """Global batches (channels on different scales and offsets), loss weights and the
    BatchNorm's affine parameters, the same in every process."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(1, CHANNELS, 1, 1, generator=g) * 3 + 0.5
    shift = torch.randn(1, CHANNELS, 1, 1, generator=g)
    xs = [torch.randn(GLOBAL_SHAPE, generator=g) * scale + shift for _ in range(STEPS)]
    ws = [torch.randn(GLOBAL_SHAPE, generator=g) for _ in range(STEPS)]
    weight = torch.rand(CHANNELS, generator=g) * 1.5 + 0.5
    bias = torch.randn(CHANNELS, generator=g) * 0.5
    return {"xs": xs, "ws": ws, "weight": weight, "bias": bias}


def run_layer(kind: str, density: float, inputs: dict, rank: int = 0, world: int = 1,
              device: str = "cpu") -> dict:
    """STEPS training-mode steps of an MT / ST layer with BatchNorm on this rank's share
    (samples rank, rank + world, ...) of each global batch, loss = sum(y * w) on the share:
    thresholds after each step, outputs, input gradients, BatchNorm parameter gradients
    and running statistics, on the CPU (the layer runs on `device`)."""
    layer = SpatialSparsity(CHANNELS, 1 - density, per_channel=kind == "mt").to(device)
    with torch.no_grad():
        layer.batch_norm.weight.copy_(inputs["weight"])
        layer.batch_norm.bias.copy_(inputs["bias"])
    out = {"thresholds": [], "y": [], "grad_x": [], "grad_weight": [], "grad_bias": []}
    for x, w in zip(inputs["xs"], inputs["ws"], strict=True):
        x = x[rank::world].to(device).clone().requires_grad_(True)
        layer.zero_grad()
        y = layer(x)
        (y * w[rank::world].to(device)).sum().backward()
        out["thresholds"].append(layer.thresholds.detach().cpu().clone())
        out["y"].append(y.detach().cpu())
        out["grad_x"].append(x.grad.cpu())
        out["grad_weight"].append(layer.batch_norm.weight.grad.cpu().clone())
        out["grad_bias"].append(layer.batch_norm.bias.grad.cpu().clone())
    out["running_mean"] = layer.batch_norm.running_mean.cpu().clone()
    out["running_var"] = layer.batch_norm.running_var.cpu().clone()
    return out


def train_config(out: Path, **overrides):
    """A tiny model, 48 samples in global batches of 8 (6 steps); every validation (each 16
    samples) lowers the density 100-fold: 2 steps each at 0.5 (r = 40,000 of 80,000 values
    a channel: the radix select), 5e-3 (r = 401) and 5e-5 (r = 5: the gather). Duplicate
    channels are resampled at the first validation (density 5e-3; the cooldown skips the
    second, the third is the last)."""
    from helpers import tiny_config

    from sparling_core.training.loop import TrainConfig

    base = dict(out=str(out), model=tiny_config(initial_density=0.5), batch_size=8,
                val_every=16, val_size=8, max_samples=48, decay_per_sample=1.0,
                initial_threshold=-1.0, min_threshold=-1.0, multiplier=0.01,
                target_density=1e-7, bf16=False, channels_last=False, threads=1,
                resample_duplicates=True, resample_below_density=0.01,
                resample_threshold=0.05, resample_min_error=0.0, resample_retry_error=0.0,
                resample_cooldown=32)
    base.update(overrides)
    return TrainConfig(**base)


# finish_phase_tied: the untied tiny model reaches the target density at 32 samples, is
# phase-tied there (the phases from the validation images, the same on every rank) and trains
# a 16-sample finish tied
TIED = dict(target_density=5e-5, finish_samples=16, finish_phase_tied=True, max_samples=64)


VALIDATION_IMAGES = 41  # uneven shares: rank 0 holds 21, rank 1 20


def validation(folder: Path, rank: int = 0, world: int = 1) -> tuple:
    """The training loop's validation (accuracy, realised density, per-image channel peaks)
    of a saved model on VALIDATION_IMAGES validation images, this rank's share of them."""
    from sparling_core.checkpoint import load_checkpoint
    from sparling_core.domains import get_domain
    from sparling_core.training.loop import _validate

    model = load_checkpoint(folder).model
    domain = get_domain(model.config.domain)
    images, labels = domain.batch(domain.samples(
        domain.split_range("val")[:VALIDATION_IMAGES], "val"))
    return _validate(model, images, labels, rank, world)


def worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        results: dict = {"layer": {}, "timing": {}}
        inputs = layer_inputs()
        t = time.perf_counter()
        for method in METHODS:
            global_stats.GATHER_MAX_R = 10**12 if method == "gather" else 0
            for kind in KINDS:
                for density in DENSITIES:
                    results["layer"][method, kind, density] = run_layer(
                        kind, density, inputs, rank, world)
        global_stats.GATHER_MAX_R = 2048
        results["timing"]["layer_s"] = time.perf_counter() - t

        from sparling_core.training.loop import train

        # stop at 32 samples, resume, go on to 48: compared with one uninterrupted process
        t = time.perf_counter()
        train(train_config(Path(out) / "ddp", max_samples=32), progress=False)
        results["at_32"] = torch.load(Path(out) / "ddp" / "train_state.pt")["samples_seen"]
        train(train_config(Path(out) / "ddp"), resume=True, progress=False)
        results["timing"]["train_s"] = time.perf_counter() - t
        t = time.perf_counter()
        train(train_config(Path(out) / "ddp-tied", **TIED), progress=False)
        results["timing"]["tied_s"] = time.perf_counter() - t
        results["validation"] = validation(Path(out) / "ddp", rank, world)
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
