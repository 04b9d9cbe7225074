"""Images per second through the service's request batcher (backend/batching.py), in
process: no HTTP, no JSON, no client on the same cores. Separates what batching buys from
what the web stack costs (bench/api.py measures both together).

    .venv/bin/python bench/batcher.py                  # checkpoints/digit-circle-mt
    .venv/bin/python bench/batcher.py --requests 200 --threads 1

Each level submits `--requests` copies of one test image from `concurrency` threads, with
batching off (max_batch 1, the baseline) and on (max_batch 8), in turns over `--rounds`
rounds; ratios are medians over rounds.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.batching import Batcher  # noqa: E402
from sparling_core.checkpoint import load_checkpoint  # noqa: E402
from sparling_core.domains import get_domain  # noqa: E402


def rate(batcher: Batcher, image: np.ndarray, n: int, concurrency: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: batcher.submit(image), range(n)))
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=REPO / "checkpoints" / "digit-circle-mt")
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    ckpt = load_checkpoint(args.checkpoint)
    domain = get_domain(ckpt.config.domain)
    image = np.asarray(domain.sample(domain.split_range("test")[0], "test").image, np.float32)
    lock = threading.Lock()  # the service's per-model lock
    configured = threading.local()

    def run(fn, *a, **k):
        if not getattr(configured, "done", False):  # OpenMP's thread count is per thread
            torch.set_num_threads(args.threads)
            configured.done = True
        with lock:
            return fn(ckpt.model, *a, **k)

    # One batcher, switched between max_batch 1 (off) and 8 (on): one compute thread, one
    # OpenMP team, as in the service. (Two batchers, two teams: with more OpenMP threads
    # than cores, libgomp stops spinning between parallel regions, and every small op of the
    # decoder then waits for a futex wake-up: a lone image took 50 ms instead of 18.)
    batcher = Batcher(run, max_batch=8)
    batcher.submit(image)  # warm-up
    modes = {"off": 1, "on": 8}
    stats_on = [0, 0, 0]  # forwards, images, largest with batching on
    rates: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for name, size in modes.items():
            batcher.max_batch = size
            for c in (1, 8):
                before = (batcher.stats.forwards, batcher.stats.images)
                rates.setdefault((name, c), []).append(rate(batcher, image, args.requests, c))
                if name == "on":
                    stats_on[0] += batcher.stats.forwards - before[0]
                    stats_on[1] += batcher.stats.images - before[1]
    stats_on[2] = batcher.stats.largest
    batcher.close(timeout=30)
    print(f"checkpoint {args.checkpoint.name}, torch threads {args.threads}, "
          f"{args.requests} requests x {args.rounds} rounds")
    for (name, c), values in rates.items():
        print(f"batching {name:<3} c={c}: {np.median(values):6.1f} images/s (median)")
    print(f"mean batch with batching on: {stats_on[1] / stats_on[0]:.2f} (c=1 and c=8 "
          f"together), largest {stats_on[2]}")
    base = np.median(rates[("off", 1)])
    for name in ("off", "on"):
        ratios = [a / b for a, b in zip(rates[(name, 8)], rates[(name, 1)], strict=True)]
        print(f"c=8 / c=1, batching {name}: {np.median(ratios):.2f}x")
    print(f"batching on c=8 / batching off c=1: {np.median(rates[('on', 8)]) / base:.2f}x")


if __name__ == "__main__":
    main()
