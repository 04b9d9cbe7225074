"""Training-mode forward + backward time of our MT / ST layers vs the reference package.

    python bench/sparsity_layer.py [--repeats 10]

For (10, 10, 100, 100) and (32, 10, 100, 100) at densities 0.5, 5e-3 and 5e-5: median time
of `sparling==0.3.0`'s SparseLayerWithBatchNorm (EnforceSparsityPerChannel2D /
EnforceSparsityUniversally), of ours (same outputs, checked each run), and of the floor
(BatchNorm + relu(x - t), which no implementation avoids). The last line is
`min_speedup_vs_reference=<x>`: the smallest speedup at density <= 5e-3.
"""

from __future__ import annotations

import argparse
import statistics
import time

import sparling
import torch
import torch.nn.functional as F
from torch import nn

from sparling_core.layers.sparsity import SpatialSparsity


class Floor(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.batch_norm = nn.BatchNorm2d(channels)
        self.register_buffer("t", torch.zeros(1, channels, 1, 1))

    def forward(self, x):
        return F.relu(self.batch_norm(x) - self.t)


def reference(per_channel: bool, channels: int, sparsity: float) -> nn.Module:
    spec = {"type": "EnforceSparsityPerChannel2D" if per_channel else "EnforceSparsityUniversally"}
    layer = sparling.SparseLayerWithBatchNorm(spec, starting_sparsity=sparsity,
                                              channels=channels, affine=True)
    layer.sparsity = sparsity
    return layer


def time_layer(layer: nn.Module, x: torch.Tensor, repeats: int) -> float:
    times = []
    for i in range(repeats + 2):
        inp = x.clone().requires_grad_(True)
        start = time.perf_counter()
        layer(inp).sum().backward()
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"median of {args.repeats}, forward+backward in training mode, ms")
    header = (f"{'shape':>18} {'density':>8} {'kind':>4} {'reference':>10} {'ours':>8} "
              f"{'floor':>7} {'speedup':>8} {'vs floor':>8} {'same':>5}")
    print(header)
    speedups = []
    for shape in [(10, 10, 100, 100), (32, 10, 100, 100)]:
        x = torch.randn(shape)
        for density in [0.5, 5e-3, 5e-5]:
            sparsity = 1 - density
            floor = time_layer(Floor(shape[1]), x, args.repeats)
            for per_channel in (True, False):
                ref = reference(per_channel, shape[1], sparsity)
                ours = SpatialSparsity(shape[1], sparsity, per_channel=per_channel)
                ours.batch_norm.load_state_dict(ref.batch_norm.state_dict())
                with torch.no_grad():  # identical outputs on the same input and state
                    same = torch.allclose(ref(x), ours(x), atol=1e-6, rtol=0)
                t_ref = time_layer(ref, x, args.repeats)
                t_ours = time_layer(ours, x, args.repeats)
                speedup = t_ref / t_ours
                if density <= 5e-3:
                    speedups.append(speedup)
                kind = "MT" if per_channel else "ST"
                print(f"{str(shape):>18} {density:>8g} {kind:>4} {t_ref * 1e3:>10.2f} "
                      f"{t_ours * 1e3:>8.2f} {floor * 1e3:>7.2f} {speedup:>7.1f}x "
                      f"{t_ours / floor:>7.2f}x {str(same):>5}")
    print(f"min_speedup_vs_reference={min(speedups):.2f}")


if __name__ == "__main__":
    main()
