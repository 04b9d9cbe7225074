"""Issue 16, item 1: no accepted image, in any shape and fit mode, adds more than 100 MB to
the server's peak memory; absurd sides and side ratios are refused from the header."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from helpers import shared_tiny_checkpoint  # noqa: E402

from sparling_core.analysis.inspect import prepare_image  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
LIMIT_MIB = 100


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("memory-checkpoints")
    shutil.copytree(shared_tiny_checkpoint(tmp_path_factory), folder / "tiny")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "memory_probe.py"), str(folder)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_image_shape_and_fit_stays_under_100_mb(probe):
    worst = max(r["rss_mib"] for r in probe.values())
    assert worst <= LIMIT_MIB, json.dumps(probe, indent=1)
    accepted = [name for name, r in probe.items() if r["status"] == 200]
    assert len(accepted) == 11, probe  # the large-but-sane shapes are still served


@pytest.mark.parametrize("name, status, words", [
    ("png 1-bit 1x4,000,000 fit=resize", 413, "a side may be at most 10000"),
    ("png 1-bit 4,000,000x1 fit=pad", 413, "a side may be at most 10000"),
    ("png 1x5,000 fit=resize", 422, "at most 100 times the other"),
    ("json 1x990,000 fit=resize", 422, "a side may be at most 10000"),
    ("png 400x10000 fit=none", 422, "expected a 100x100 image"),
])
def test_absurd_shapes_are_refused_clearly(probe, name, status, words):
    assert probe[name]["status"] == status, probe[name]
    assert words in json.dumps(probe[name]["detail"])


def test_resize_builds_no_full_width_intermediate():
    import tracemalloc

    wide = np.zeros((1, 2_000_000), dtype=np.float32)
    tracemalloc.start()
    out = prepare_image(wide, 100, "resize")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.shape == (100, 100)
    assert peak < 40 * 2**20  # float64 copy of the input (16 MB) and a mask; never 100 x W
