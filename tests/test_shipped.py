"""The shipped generic-decoder checkpoint is what the README says it is."""

import json
import math
from pathlib import Path

from sparling_core.analysis.evaluate import evaluate
from sparling_core.checkpoint import load_checkpoint

GENERIC = Path(__file__).resolve().parent.parent / "checkpoints" / "digit-circle-mt-generic"


def test_generic_checkpoint_uses_the_generic_decoder_and_meets_issue_12():
    ckpt = load_checkpoint(GENERIC)
    model = ckpt.model.config
    assert model.domain == "digit-circle"
    assert model.decoder == "points" and model.point_encoder == "relative"
    assert model.sparsity == "mt"
    assert not (GENERIC / "train_state.pt").exists()  # shipped without the optimizer state
    metrics = json.loads((GENERIC / "metrics.json").read_text())
    assert metrics["n"] == 10_000 and metrics["domain"] == "digit-circle"
    assert max(metrics[k] for k in ("e2ee", "fpe", "fne", "ce")) <= 5.0
    assert metrics["density_ratio"] <= 1.5
    assert metrics["samples_seen"] == ckpt.meta["samples_seen"]


def test_generic_checkpoint_history_fits_three_hours_of_training():
    rows = [json.loads(line) for line in (GENERIC / "history.jsonl").read_text().splitlines()]
    # each process restarts its clock: a run's time is the sum of each segment's last wall_s
    segments = [a["wall_s"] for a, b in zip(rows, rows[1:], strict=False)
                if b["wall_s"] < a["wall_s"]] + [rows[-1]["wall_s"]]
    assert len(segments) >= 1 and sum(segments) <= 180 * 60
    assert rows[0]["samples"] <= 4_000  # from scratch


def test_generic_checkpoint_reads_test_images():
    report = evaluate(load_checkpoint(GENERIC).model, n=200)
    assert all(math.isfinite(report[k]) for k in ("e2ee", "fpe", "fne", "ce"))
    assert report["e2ee"] <= 10.0 and report["fne"] <= 5.0 and report["ce"] <= 5.0
