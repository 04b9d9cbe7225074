"""The shipped checkpoints are what the README says they are."""

import json
import math
from pathlib import Path

import pytest

from sparling_core.analysis.evaluate import evaluate
from sparling_core.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
GENERIC = ROOT / "checkpoints" / "digit-circle-mt-generic"


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



def test_fast_ablation_table_is_built_from_the_shipped_rows():
    """experiments/ablations-fast.json (the README's fast-recipe table) holds exactly the
    shipped checkpoints/ablation-fast-* evaluations, every row at the same sample budget on
    the 10,000 test images, and each shipped row's weights are the ones it evaluated."""
    table = json.loads((ROOT / "experiments" / "ablations-fast.json").read_text())
    shipped = sorted(p.name for p in (ROOT / "checkpoints").glob("ablation-fast-*"))
    in_table = sorted(f"ablation-fast-{name}-s{run['seed']}"
                      for name, row in table.items() for run in row["runs"])
    assert in_table == shipped
    for name, row in table.items():
        for run in row["runs"]:
            folder = ROOT / "checkpoints" / f"ablation-fast-{name}-s{run['seed']}"
            metrics = json.loads((folder / "metrics.json").read_text())
            assert metrics["n"] == 10_000 and metrics["samples_seen"] == 199_744
            assert {k: run[k] for k in ("e2ee", "fpe", "fne", "ce")} == {
                k: metrics[k] for k in ("e2ee", "fpe", "fne", "ce")}
            assert load_checkpoint(folder).meta["samples_seen"] == 199_744
            assert not (folder / "train_state.pt").exists()
        values = [run["ce"] for run in row["runs"]]
        assert row["mean"]["ce"] == sum(values) / len(values)


def test_shipped_recipe_seed_table_is_built_from_the_shipped_seeds():
    """experiments/ablations-shipped.json (the README's seed spread of the shipped recipe)
    holds the shipped checkpoint as seed 1 and exactly the shipped ablation-mt-sS seeds,
    each evaluated on the 10,000 test images, with the mean and spread of those values."""
    table = json.loads((ROOT / "experiments" / "ablations-shipped.json").read_text())
    row = table["mt"]
    shipped = sorted(int(p.name.removeprefix("ablation-mt-s"))
                     for p in (ROOT / "checkpoints").glob("ablation-mt-s*"))
    assert row["seeds"] == [1, *shipped] and len(shipped) >= 1
    for run in row["runs"]:
        folder = ROOT / "checkpoints" / (
            "digit-circle-mt" if run["seed"] == 1 else f"ablation-mt-s{run['seed']}")
        metrics = json.loads((folder / "metrics.json").read_text())
        config = json.loads((folder / "config.json").read_text())["train"]
        assert config["seed"] == run["seed"] and metrics["n"] == 10_000
        assert {k: run[k] for k in ("e2ee", "fpe", "fne", "ce")} == {
            k: metrics[k] for k in ("e2ee", "fpe", "fne", "ce")}
        assert 300_000 <= run["samples_seen"] <= 310_000
    for key in ("e2ee", "fpe", "fne", "ce"):
        values = [run[key] for run in row["runs"]]
        assert row["mean"][key] == pytest.approx(sum(values) / len(values))
        assert (row["min"][key], row["max"][key]) == (min(values), max(values))


def assert_one_2_thread_cpu_run_within_50_minutes(folder: Path, minutes: float = 50) -> None:
    """FOLDER's history: from scratch, one segment (wall time only grows: no resume), on
    the CPU with 2 threads and 1 process, its last row within `minutes` (50)."""
    rows = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    assert rows[0]["samples"] <= 4_000
    assert all(b["wall_s"] > a["wall_s"] for a, b in zip(rows, rows[1:], strict=False))
    assert {(r["device"], r["threads"], r["world_size"]) for r in rows} == {("cpu", 2, 1)}
    assert rows[-1]["wall_s"] <= minutes * 60


@pytest.mark.parametrize("name", ["decay", "long"])
def test_untied_fast_checkpoint_is_one_2_core_cpu_run_under_50_minutes(name):
    """checkpoints/digit-circle-mt-fast-untied-{decay,long}-s1 (README, issue 15's speed
    section): one run from scratch on 2 CPU threads, no resume, under 50 minutes of wall
    time, with FPE, FNE and CE below the paper's on the 10,000 test images (their E2EE is
    not: 2.35 and 1.49)."""
    folder = ROOT / "checkpoints" / f"digit-circle-mt-fast-untied-{name}-s1"
    assert_one_2_thread_cpu_run_within_50_minutes(folder)
    ckpt = load_checkpoint(folder)
    assert not ckpt.config.phase_tied
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["n"] == 10_000 and metrics["samples_seen"] == ckpt.meta["samples_seen"]
    assert metrics["fpe"] <= 1.48 and metrics["fne"] <= 0.42 and metrics["ce"] <= 1.16
    assert metrics["density_ratio"] <= 1.12


def test_tied_finish_checkpoint_meets_issue_15s_speed_target():
    """checkpoints/digit-circle-mt-fast-tied-finish-s1 (README, issue 15's speed section):
    one run from scratch on 2 CPU threads, no resume, annealed untied and finished
    phase-tied (finish_phase_tied), whose history ends within 50 minutes of wall time, with
    E2EE, FPE, FNE and CE at or below the paper's (0.74 / 1.48 / 0.42 / 1.16) at <= 1.12x
    the minimum density on the 10,000 test images."""
    folder = ROOT / "checkpoints" / "digit-circle-mt-fast-tied-finish-s1"
    assert_one_2_thread_cpu_run_within_50_minutes(folder)
    ckpt = load_checkpoint(folder)
    saved = json.loads((folder / "config.json").read_text())
    assert ckpt.config.phase_tied and ckpt.model.motif_model.phase_tied
    assert saved["train"]["finish_phase_tied"] and not saved["train"]["model"]["phase_tied"]
    assert saved["train"]["threads"] == 2 and saved["train"]["seed"] == 1
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["n"] == 10_000 and metrics["samples_seen"] == ckpt.meta["samples_seen"]
    assert metrics["e2ee"] <= 0.74 and metrics["fpe"] <= 1.48
    assert metrics["fne"] <= 0.42 and metrics["ce"] <= 1.16
    assert metrics["density_ratio"] <= 1.12
    assert not (folder / "train_state.pt").exists()


TIED_FINISH_LABELS = {
    2: "**seed 2: `digit-circle-mt-fast-tied-finish-s2`** (2026-11-28; a host 1.9x faster, "
       "see below)",
    3: "**seed 3: `digit-circle-mt-fast-tied-finish-s3`** (2026-11-28; seed 2's host)",
    4: "seed 4: `digit-circle-mt-fast-tied-finish-s4` (2026-12-08; an AMD EPYC (Zen 5) host, "
       "see below)",
}


def tied_finish(seed: int) -> tuple[Path, dict, list[dict]]:
    folder = ROOT / "checkpoints" / f"digit-circle-mt-fast-tied-finish-s{seed}"
    rows = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    return folder, json.loads((folder / "metrics.json").read_text()), rows


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_tied_finish_seeds_2_to_4_are_the_readmes_rows(seed):
    """checkpoints/digit-circle-mt-fast-tied-finish-s{2,3,4}: the same recipe with seeds 2,
    3 and 4, each one run from scratch on 2 CPU threads; the README's row is its history's
    last wall time and its metrics.json (seed 2's FPE 2.17 misses the paper's 1.48, seed 4
    misses E2EE, FPE and FNE; the README says so)."""
    folder, metrics, rows = tied_finish(seed)
    assert_one_2_thread_cpu_run_within_50_minutes(folder)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["train"]["seed"] == seed and saved["train"]["finish_phase_tied"]
    ckpt = load_checkpoint(folder)
    assert ckpt.config.phase_tied
    assert metrics["n"] == 10_000 and metrics["samples_seen"] == ckpt.meta["samples_seen"]
    row = (f"| {TIED_FINISH_LABELS[seed]} | {metrics['samples_seen']:,} | "
           f"**{rows[-1]['wall_s'] / 60:.1f}** | {metrics['e2ee']:.2f} | {metrics['fpe']:.2f} | "
           f"{metrics['fne']:.2f} | {metrics['ce']:.2f} | {metrics['density_ratio']:.2f}x | "
           f"{metrics['exact_match_accuracy']:.2f}% |")
    assert row in (ROOT / "README.md").read_text()
    assert not (folder / "train_state.pt").exists()


def test_tied_finish_mean_row_is_the_three_seeds():
    """The README's mean [min, max] row over seeds 1-3 of the tied-finish recipe, from
    their metrics.json and histories; each mean is at or below the paper's mean."""
    runs = [tied_finish(seed) for seed in (1, 2, 3)]
    metrics = [m for _, m, _ in runs]
    minutes = [rows[-1]["wall_s"] / 60 for _, _, rows in runs]

    def cell(key: str, fmt: str = ".2f", unit: str = "", bold: bool = True) -> str:
        v = [m[key] for m in metrics]
        text = (f"{sum(v) / 3:{fmt}}{unit} [{min(v):{fmt}}{unit if unit == 'x' else ''}, "
                f"{max(v):{fmt}}{unit if unit == 'x' else ''}]")
        return f"**{text}**" if bold else text

    samples = sum(m["samples_seen"] for m in metrics) / 3
    row = (f"| **mean [min, max], seeds 1-3** | {samples:,.0f} | "
           f"{min(minutes):.1f}-{max(minutes):.1f} (two hosts) | {cell('e2ee')} | "
           f"{cell('fpe')} | {cell('fne')} | {cell('ce')} | "
           f"{cell('density_ratio', unit='x', bold=False)} | "
           f"{cell('exact_match_accuracy', unit='%', bold=False)} |")
    assert row in (ROOT / "README.md").read_text()
    paper = {"e2ee": 0.74, "fpe": 1.48, "fne": 0.42, "ce": 1.16, "density_ratio": 1.12}
    assert all(sum(m[k] for m in metrics) / 3 <= bound for k, bound in paper.items())


def assert_release_run_is_the_readmes_row(folder: Path, seed: int, bold_minutes: bool,
                                          uncovered: str | None = None,
                                          meets: bool | None = None) -> list[dict]:
    """A run of configs/digit-circle-mt-fast-coverage-release.json (README, "Aiming
    resampling at the digits without a detector"): its config, its README row (metrics.json
    and the history's last wall time), every number at or below the paper's, every digit
    covered at the end, no train_state.pt. With `uncovered` (the row's last cell), a run
    that missed: its numbers plain, and above the paper's E2EE. With `meets=False` and no
    `uncovered`, a run that covered every digit and still missed a paper number: its
    numbers plain. Returns its history rows."""
    meets = uncovered is None if meets is None else meets
    saved = json.loads((folder / "config.json").read_text())["train"]
    assert saved["resample_by_coverage"] and saved["resample_release_exhausted"]
    assert saved["seed"] == seed and saved["finish_phase_tied"]
    metrics = json.loads((folder / "metrics.json").read_text())
    rows = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    ckpt = load_checkpoint(folder)
    assert ckpt.config.phase_tied
    assert metrics["n"] == 10_000 and metrics["samples_seen"] == ckpt.meta["samples_seen"]
    minutes = f"{rows[-1]['wall_s'] / 60:.1f} min"
    bold = "**" if meets else ""
    row = (f"| {metrics['samples_seen']:,} ({f'**{minutes}**' if bold_minutes else minutes}) | "
           + "".join(f"{bold}{metrics[k]:.2f}{bold} | " for k in ("e2ee", "fpe", "fne", "ce"))
           + f"{metrics['density_ratio']:.2f}x | {uncovered or 'none'} |")
    assert row in (ROOT / "README.md").read_text()
    if uncovered is not None:
        assert metrics["e2ee"] > 0.74 and rows[-1]["uncovered"]
        assert not (folder / "train_state.pt").exists()
        return rows
    paper = {"e2ee": 0.74, "fpe": 1.48, "fne": 0.42, "ce": 1.16, "density_ratio": 1.12}
    if not meets:
        assert any(metrics[k] > bound for k, bound in paper.items())
        assert rows[-1]["uncovered"] == [] and not (folder / "train_state.pt").exists()
        return rows
    assert metrics["e2ee"] <= 0.74 and metrics["fpe"] <= 1.48
    assert metrics["fne"] <= 0.42 and metrics["ce"] <= 1.16 and metrics["density_ratio"] <= 1.12
    assert rows[-1]["uncovered"] == [] and not (folder / "train_state.pt").exists()
    return rows


def test_coverage_release_checkpoint_is_the_readmes_row():
    """checkpoints/digit-circle-mt-fast-coverage-release-s1: seed 1, one 2-thread CPU run
    from scratch within 50 minutes; the history shows the channel redrawn after its release
    covering 7."""
    folder = ROOT / "checkpoints" / "digit-circle-mt-fast-coverage-release-s1"
    assert_one_2_thread_cpu_run_within_50_minutes(folder)
    rows = assert_release_run_is_the_readmes_row(folder, seed=1, bold_minutes=True)
    # channel 6 drawn for 7 five times (the 4th after its release), then 7 covered
    draws = [r["samples"] for r in rows for c, _, d in r["resampled"] if (c, d) == (6, 7)]
    assert len(draws) == 5


def test_coverage_release_seed_2_is_the_readmes_row():
    """checkpoints/digit-circle-mt-fast-coverage-release-s2: seed 2, one 2-thread CPU run
    from scratch on a slower host, stopped by its --max-minutes 115; the history shows
    channel 6 released from 3, drawn twice more, and 3 covered at the end."""
    folder = ROOT / "checkpoints" / "digit-circle-mt-fast-coverage-release-s2"
    assert_one_2_thread_cpu_run_within_50_minutes(folder, minutes=115.5)
    rows = assert_release_run_is_the_readmes_row(folder, seed=2, bold_minutes=False)
    assert json.loads((folder / "config.json").read_text())["train"]["max_minutes"] == 115
    assert json.loads((folder / "metrics.json").read_text())["samples_seen"] == rows[-1]["samples"]
    draws = [r["samples"] for r in rows for c, _, d in r["resampled"] if (c, d) == (6, 3)]
    assert draws == [44_000, 74_016, 106_016, 140_000, 170_016]
    assert "released channel 6 from digit 3" in (folder / "train.log").read_text()


LATEX = ROOT / "checkpoints" / "latex-ocr-mt"


def latex_readme_row(metrics: dict) -> str:
    """The README's row for checkpoints/latex-ocr-mt, from its metrics.json."""
    return (f"| `checkpoints/latex-ocr-mt`, CPU, {metrics['samples_seen']:,} samples "
            f"(10,000 test images) | {metrics['e2ee']:.2f} | {metrics['fpe']:.2f} | "
            f"{metrics['fne']:.2f} | {metrics['ce']:.2f} | {metrics['density']:.3g} | "
            f"{metrics['density_ratio']:.2f}x |")


def test_latex_checkpoint_is_a_cpu_run_within_8_hours_and_the_readme_row():
    """checkpoints/latex-ocr-mt (README, LaTeX-OCR; issue 13): the MT recipe with 32
    channels on latex-ocr, trained from scratch on the CPU in resumed segments whose wall
    time adds up to <= 8 hours, evaluated on the 10,000 test images; the README's row is
    its metrics.json."""
    ckpt = load_checkpoint(LATEX)
    config = ckpt.model.config
    assert (config.domain, config.sparsity, config.motif_channels) == ("latex-ocr", "mt", 32)
    assert not (LATEX / "train_state.pt").exists()
    rows = [json.loads(line) for line in (LATEX / "history.jsonl").read_text().splitlines()]
    assert rows[0]["samples"] <= 2_000  # from scratch
    assert {r.get("device", "cpu") for r in rows} == {"cpu"}
    total, last = 0.0, 0.0  # each resume restarts the clock
    for row in rows:
        if row["wall_s"] < last:
            total += last
        last = row["wall_s"]
    assert (total + last) / 60 <= 8 * 60
    metrics = json.loads((LATEX / "metrics.json").read_text())
    assert metrics["n"] == 10_000 and metrics["domain"] == "latex-ocr"
    assert metrics["samples_seen"] == ckpt.meta["samples_seen"] == rows[-1]["samples"]
    assert metrics["density"] <= rows[-1]["density"] * 1.5  # evaluated at the trained density
    assert latex_readme_row(metrics) in (ROOT / "README.md").read_text()


def test_coverage_release_seed_3_is_the_readmes_row():
    """checkpoints/digit-circle-mt-fast-coverage-release-s3: seed 3, the config as it is
    (its 49.5-minute cap) on the 2026-12-07 Intel host; it stopped at the cap with 7 never
    covered: channel 8 drawn for 7 three times, released, drawn twice more."""
    folder = ROOT / "checkpoints" / "digit-circle-mt-fast-coverage-release-s3"
    assert_one_2_thread_cpu_run_within_50_minutes(folder)
    rows = assert_release_run_is_the_readmes_row(folder, seed=3, bold_minutes=False,
                                                 uncovered="7 (never covered)")
    assert json.loads((folder / "config.json").read_text())["train"]["max_minutes"] == 49.5
    assert all(7 in r["uncovered"] for r in rows if r["samples"] >= 2000)
    draws = [r["samples"] for r in rows for c, _, d in r["resampled"] if (c, d) == (8, 7)]
    assert draws == [56000, 86016, 118016, 152000, 182016]
    assert "released channel 8 from digit 7" in (folder / "train.log").read_text()



def test_coverage_release_seed_4_is_the_readmes_row():
    """checkpoints/digit-circle-mt-fast-coverage-release-s4: seed 4, the config as it is on
    the 2026-12-08 AMD EPYC host, ran to its end within 30 minutes with every digit covered
    and the release never acting; E2EE, CE and the density meet the paper's numbers, FPE and
    FNE do not: the misses are the 1s (their channel fires one pixel beside them)."""
    folder = ROOT / "checkpoints" / "digit-circle-mt-fast-coverage-release-s4"
    assert_one_2_thread_cpu_run_within_50_minutes(folder, minutes=30)
    rows = assert_release_run_is_the_readmes_row(folder, seed=4, bold_minutes=False,
                                                 meets=False)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["e2ee"] <= 0.74 and metrics["ce"] <= 1.16 and metrics["density_ratio"] <= 1.12
    assert metrics["fpe"] > 1.48 and metrics["fne"] > 0.42
    missed = metrics["missed_by_symbol"]
    assert missed[1] > 0.95 * sum(missed)  # the 1s
    assert "released channel" not in (folder / "train.log").read_text()
    assert [r["samples"] for r in rows if r["resampled"]] == [52_000, 82_016, 114_016]


def test_tied_finish_seed_4_misses_for_the_readmes_reasons():
    """Seed 4 of the tied-finish recipe: 5 never covered (its redrawn channel never learned
    it) and the 1s all missed (their channel marks them beside the box); the README's mean
    over seeds 1-4 is from the four metrics.json, and no longer beats the paper's E2EE."""
    folder, metrics, rows = tied_finish(4)
    assert rows[-1]["uncovered"] == [5] and all(5 in r["uncovered"] for r in rows[-50:])
    missed = metrics["missed_by_symbol"]
    assert missed[5] > 4000 and missed[1] > 4000  # of about 4,450 each
    draws = [r["samples"] for r in rows for c, _, d in r["resampled"] if (c, d) == (7, 5)]
    assert draws == [52_000, 82_016, 114_016]
    runs = [tied_finish(seed) for seed in (1, 2, 3, 4)]
    means = {k: sum(m[k] for _, m, _ in runs) / 4 for k in ("e2ee", "fpe", "fne", "ce")}
    row = ("  | mean [min, max], seeds 1-4 | "
           f"{sum(m['samples_seen'] for _, m, _ in runs) / 4:,.0f} | 22.0-49.1 (three hosts) | "
           + " | ".join(f"{means[k]:.2f} [{min(m[k] for _, m, _ in runs):.2f}, "
                        f"{max(m[k] for _, m, _ in runs):.2f}]" for k in means) + " |")
    assert row in (ROOT / "README.md").read_text()
    assert means["e2ee"] > 0.74


def test_coverage_release_seed_5_is_the_readmes_row():
    """checkpoints/digit-circle-mt-fast-coverage-release-s5: seed 5, the config as it is on
    the 2026-12-08 AMD EPYC host, one run from scratch that meets every paper number within
    issue 15's 30-minute goal; one resample check acted, the release never did."""
    folder = ROOT / "checkpoints" / "digit-circle-mt-fast-coverage-release-s5"
    assert_one_2_thread_cpu_run_within_50_minutes(folder, minutes=30)
    rows = assert_release_run_is_the_readmes_row(folder, seed=5, bold_minutes=True)
    assert [r["samples"] for r in rows if r["resampled"]] == [54_016]
    assert "released channel" not in (folder / "train.log").read_text()
