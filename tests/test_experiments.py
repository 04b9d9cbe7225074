"""experiments/ablations.py end to end on a tiny model: train, evaluate, ship, table."""

import importlib
import json
import pathlib
import sys

import pytest
import torch

from sparling_core.checkpoint import load_checkpoint
from sparling_core.models.sparling import digit_circle_tiny

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ablations():
    # imported as a package module, so that worker processes can unpickle its functions
    sys.path.insert(0, str(ROOT))
    return importlib.import_module("experiments.ablations")


def _tiny_config(tmp_path: pathlib.Path) -> pathlib.Path:
    config = {"model": digit_circle_tiny().to_dict(), "batch_size": 8, "val_every": 16,
              "val_size": 8, "decay_per_sample": 1e-3, "initial_threshold": -1.0,
              "min_threshold": -1.0, "lr": 1e-3}
    path = tmp_path / "base.json"
    path.write_text(json.dumps(config))
    return path


def test_runs_evaluates_ships_and_tabulates(ablations, tmp_path, capsys):
    runs, ship = tmp_path / "runs", tmp_path / "ship"
    args = ["--recipe", "legacy", "--config", str(_tiny_config(tmp_path)), "--only", "st,l1-1",
            "--max-samples", "32",
            "--eval-n", "6", "--runs", str(runs), "--ship", str(ship),
            "--reference", str(tmp_path / "none"), "--parallel", "2", "--threads", "1",
            "--table", str(tmp_path / "table.md")]
    assert ablations.main(args) == 0
    out = capsys.readouterr().out
    assert "| st |" in out and "| l1-1 |" in out and "| no-batchnorm |" not in out
    assert (tmp_path / "table.md").read_text() in out
    assert set(json.loads((tmp_path / "table.json").read_text())) == {"st", "l1-1"}
    for name, kind in (("st", "st"), ("l1-1", "l1")):
        report = json.loads((runs / name / "eval.json").read_text())
        assert report["n"] == 6 and report["samples_seen"] == 32
        shipped = ship / f"ablation-{name}"
        assert not (shipped / "train_state.pt").exists()
        # the run's log (beside its folder: each save replaces the folder) has every
        # validation, and is shipped as train.log
        log = (runs / f"{name}.log").read_text()
        assert log.count("validation {") == 2 and (shipped / "train.log").read_text() == log
        ckpt = load_checkpoint(shipped)
        assert ckpt.config.sparsity == kind
        assert ckpt.metrics["e2ee"] == report["e2ee"]
    l1 = load_checkpoint(ship / "ablation-l1-1")
    assert l1.config.penalty_weight == 1.0
    assert json.loads((runs / "l1-1" / "config.json").read_text())["train"]["schedule"] == "fixed"
    # a second call finds both runs finished and only rebuilds the table
    mtime = (runs / "st" / "eval.json").stat().st_mtime
    assert ablations.main(args) == 0
    assert (runs / "st" / "eval.json").stat().st_mtime == mtime
    # without the runs (a fresh clone), the table comes from the shipped evaluations
    capsys.readouterr()
    assert ablations.main(["--recipe", "legacy", "--table-only", "--runs", str(tmp_path / "gone"),
                           "--ship", str(ship), "--table", str(tmp_path / "shipped.md")]) == 0
    assert (tmp_path / "shipped.md").read_text() == (tmp_path / "table.md").read_text()


def test_variant_overrides_reach_the_config(ablations, tmp_path):
    base = json.loads(_tiny_config(tmp_path).read_text())
    cfg = ablations.variant_config(base, ablations.VARIANTS["no-annealing"][0],
                                   tmp_path / "x", 1000, 1)
    assert cfg["schedule"] == "fixed"
    assert cfg["model"]["initial_density"] == pytest.approx(0.5 * 0.75**32)
    assert cfg["max_samples"] == 1000 and cfg["threads"] == 1
    assert base["model"]["initial_density"] == 0.5  # the base config is not modified
    cfg = ablations.variant_config(base, ablations.VARIANTS["no-batchnorm"][0], tmp_path, 5, 1)
    assert cfg["model"]["batch_norm"] is False
    # resampling: the base config's unless forced (the legacy recipe forces it off)
    base["resample_duplicates"] = True
    assert ablations.variant_config(base, {}, tmp_path, 5, 1)["resample_duplicates"] is True
    assert ablations.variant_config(base, {}, tmp_path, 5, 1, resample=False)[
        "resample_duplicates"] is False
    # ... but a variant that takes it away wins, and the seed reaches the config
    cfg = ablations.variant_config(base, ablations.VARIANTS["no-resample"][0], tmp_path, 5, 1,
                                   resample=True, seed=7)
    assert cfg["resample_duplicates"] is False and cfg["seed"] == 7
    for name, key, value in (("no-presence", "presence_weight", 0.0),
                             ("untied", "phase_tied", False),
                             ("generic-decoder", "decoder", "points")):
        cfg = ablations.variant_config(base, ablations.VARIANTS[name][0], tmp_path, 5, 1)
        assert cfg["model"][key] == value
    cfg = ablations.variant_config(base, ablations.VARIANTS["st-no-presence"][0], tmp_path, 5, 1)
    assert cfg["model"]["sparsity"] == "st" and cfg["model"]["presence_weight"] == 0.0


def test_the_shipped_recipe_runs_seeds_and_reports_their_spread(ablations, tmp_path, capsys):
    """Two variants x two seeds: runs NAME-sS, shipped ablation-NAME-sS, one table row per
    variant with mean [min, max], and a JSON summary whose mean is the seeds' mean."""
    runs, ship, table = tmp_path / "runs", tmp_path / "ship", tmp_path / "shipped.md"
    args = ["--config", str(_tiny_config(tmp_path)), "--only", "mt,no-presence",
            "--seeds", "1,2", "--max-samples", "16", "--eval-n", "4", "--runs", str(runs),
            "--ship", str(ship), "--parallel", "2", "--threads", "1", "--table", str(table)]
    assert ablations.main(args) == 0
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == [
        "mt-s1", "mt-s2", "no-presence-s1", "no-presence-s2"]
    for run, seed, weight in (("mt-s2", 2, 1.0), ("no-presence-s1", 1, 0.0)):
        ckpt = load_checkpoint(ship / f"ablation-{run}")
        assert ckpt.config.presence_weight == weight
        saved = json.loads((runs / run / "config.json").read_text())["train"]
        assert saved["seed"] == seed and saved["max_samples"] == 16
    summary = json.loads(table.with_suffix(".json").read_text())
    assert set(summary) == {"mt", "no-presence"}
    mt = summary["mt"]
    assert mt["seeds"] == [1, 2] and mt["n_seeds"] == 2
    e2ee = [json.loads((runs / f"mt-s{s}" / "eval.json").read_text())["e2ee"] for s in (1, 2)]
    assert mt["mean"]["e2ee"] == pytest.approx(sum(e2ee) / 2)
    assert mt["min"]["e2ee"] == min(e2ee) and mt["max"]["e2ee"] == max(e2ee)
    row = next(line for line in table.read_text().splitlines() if line.startswith("| mt |"))
    assert row.startswith("| mt | 1, 2 | ") and f"[{min(e2ee):.2f}, {max(e2ee):.2f}]" in row
    # a later call for one seed (here: the table alone) keeps every seed found in its rows
    one_seed = [a if a != "1,2" else "1" for a in args]
    assert ablations.main([*one_seed, "--table-only"]) == 0
    assert json.loads(table.with_suffix(".json").read_text()) == summary
    # a bad seed list is refused with a message
    with pytest.raises(SystemExit) as e:
        ablations.main([*args, "--seeds", "1,x"])
    assert e.value.code == 2 and "--seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ablations.main(["--recipe", "legacy", "--seeds", "1,2", "--table-only"])
    assert "one --seeds value" in capsys.readouterr().err


def test_the_fast_recipe_prefixes_its_runs_and_trains_every_row_to_the_budget(
        ablations, tmp_path, capsys):
    """--recipe fast: runs fast-NAME-sS (apart from the shipped recipe's NAME-sS), shipped
    as ablation-fast-NAME-sS, finish_samples raised to the budget, the device passed on."""
    runs, ship, table = tmp_path / "runs", tmp_path / "ship", tmp_path / "fast.md"
    base = json.loads(_tiny_config(tmp_path).read_text())
    base.update(finish_samples=4, target_density=0.4)  # would stop after 4 samples at 0.4
    (tmp_path / "fast.json").write_text(json.dumps(base))
    args = ["--recipe", "fast", "--config", str(tmp_path / "fast.json"), "--only", "st",
            "--seeds", "3", "--max-samples", "32", "--eval-n", "4", "--runs", str(runs),
            "--ship", str(ship), "--threads", "1", "--table", str(table), "--device", "cpu"]
    assert ablations.main(args) == 0
    assert [p.name for p in runs.iterdir() if p.is_dir()] == ["fast-st-s3"]
    assert (runs / "fast-st-s3.log").is_file()  # the log beside the run folder
    saved = json.loads((runs / "fast-st-s3" / "config.json").read_text())["train"]
    assert saved["finish_samples"] == 32 and saved["device"] == "cpu" and saved["seed"] == 3
    assert json.loads((runs / "fast-st-s3" / "eval.json").read_text())["samples_seen"] == 32
    assert load_checkpoint(ship / "ablation-fast-st-s3").config.sparsity == "st"
    assert "| st | 3 |" in table.read_text()
    cfg = ablations.variant_config(base, {}, tmp_path, 100, 1, device="cuda",
                                   finish_to_budget=True)
    assert cfg["device"] == "cuda" and cfg["finish_samples"] == 100
    base["max_minutes"] = 50  # a row's budget is its samples, whatever the wall clock
    assert ablations.variant_config(base, {}, tmp_path, 100, 1)["max_minutes"] is None
    assert ablations.variant_config(base, {}, tmp_path, 100, 1)["finish_samples"] == 4


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")
def test_device_cuda_without_a_gpu_is_refused(ablations, capsys):
    with pytest.raises(SystemExit) as e:
        ablations.main(["--recipe", "fast", "--only", "mt", "--device", "cuda"])
    assert e.value.code == 2 and "no CUDA device" in capsys.readouterr().err


def test_bad_arguments_exit_with_a_message(ablations, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        ablations.main(["--only", "nope", "--max-samples", "10"])
    assert e.value.code == 2
    assert "unknown variants ['nope']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ablations.main(["--config", str(tmp_path / "missing.json"), "--max-samples", "10"])
    assert "does not exist" in capsys.readouterr().err


class _FakeModel:
    """Stands in for a model: `fire(y)` sets the active values of a zero (N, 10, 100, 100)
    sparse map."""

    class bottleneck:  # noqa: N801
        @staticmethod
        def active(y):
            return y > 0

    def __init__(self, fire):
        self.fire = fire

    def sparse_motifs(self, images):
        import torch

        y = torch.zeros(len(images), 10, 100, 100)
        self.fire(y)
        return y


def test_channel_sites_finds_the_nearest_digit_and_distance():
    sites = importlib.import_module("experiments.channel_sites")
    from sparling_core.domains import digit_circle as dc

    samples = [dc.sample(5)]
    first, second = samples[0].motifs[:2]

    def fire(y):  # channel 2 on the first digit's centre, channel 7 3 px off the second
        y[0, 2, first.center[0], first.center[1]] = 1.0
        y[0, 7, second.center[0], second.center[1] + 3] = 1.0

    rows = sites.channel_sites(_FakeModel(fire), samples)
    assert rows[2] == {"channel": 2, "active": 1, "nearest": [(first.digit, 1)],
                       "median_distance": 0.0, "in_box": 1, "outside": []}
    assert rows[7]["nearest"] == [(second.digit, 1)] and rows[7]["median_distance"] == 3.0
    assert rows[0] == {"channel": 0, "active": 0, "nearest": [], "median_distance": None,
                       "in_box": 0, "outside": []}


def test_channel_sites_says_how_far_outside_the_box_a_mark_lies(capsys):
    sites = importlib.import_module("experiments.channel_sites")
    from sparling_core.domains import digit_circle as dc

    box = (10, 20, 22, 27)  # rows 10-21, columns 20-26
    assert sites.outside_by(15, 23, box) == (0, 0)
    assert sites.outside_by(15, 27, box) == (0, 1)  # one column right of the last
    assert sites.outside_by(9, 19, box) == (-1, -1)
    assert sites.outside_by(24, 23, box) == (3, 0)
    sample = dc.sample(5)
    motif = sample.motifs[0]
    r0, c0, r1, c1 = motif.box

    def fire(y):  # channel 4 just right of the first digit's box, channel 1 inside it
        y[0, 4, (r0 + r1) // 2, c1] = 1.0
        y[0, 1, r0, c0] = 1.0

    rows = sites.channel_sites(_FakeModel(fire), [sample])
    assert rows[4]["in_box"] == 0 and rows[4]["outside"] == [((0, 1), 1)]
    assert rows[1]["in_box"] == 1 and rows[1]["outside"] == []


def test_a_run_that_another_process_trains_is_refused(ablations, tmp_path):
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    with open(ablations.run_files(out)[0], "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ablations.RunLocked, match="another process is training"):
            ablations.run_variant("st", {"out": str(out)}, 1, None)


def test_workers_exit_when_the_script_is_killed(tmp_path):
    """A killed script must not leave workers training on (they would race a rerun)."""
    import os
    import signal
    import subprocess
    import time

    code = (
        "import os, sys, time\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "import multiprocessing as mp\n"
        "from experiments.ablations import exit_with_parent\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(1, mp_context=mp.get_context('spawn'),\n"
        "                               initializer=exit_with_parent, initargs=(os.getpid(),))\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 120)\n"
        "    time.sleep(120)\n"
    )
    script = tmp_path / "parent.py"
    script.write_text(code)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(worker, signal.SIGKILL)
    pytest.fail("the worker outlived its killed parent")


def test_phase_misses_splits_hits_by_box_parity(tmp_path, capsys):
    phases = importlib.import_module("experiments.phase_misses")
    from sparling_core.domains import digit_circle as dc

    samples = [dc.sample(s) for s in range(40)]

    def fire(y):  # each digit's channel (= the digit) at its centre, if its box starts at
        for i, s in enumerate(samples):  # an even column
            for m in s.motifs:
                if m.box[1] % 2 == 0:
                    y[i, m.digit, m.center[0], m.center[1]] = 1.0

    table = phases.phase_hits(_FakeModel(fire), {d: d for d in range(10)}, samples,
                              batch_size=40)
    for cells in table.values():
        for (_, col), (hits, total) in cells.items():
            assert hits == (total if col == 0 else 0)
    assert sum(t for cells in table.values() for _, t in cells.values()) == sum(
        len(s.motifs) for s in samples)
    with pytest.raises(SystemExit):  # a folder that is not a checkpoint
        phases.main([str(tmp_path)])
    assert "error" in capsys.readouterr().err


def test_selectivity_check_prints_every_channel_and_token(tmp_path, capsys):
    from helpers import make_tiny_checkpoint

    check = importlib.import_module("experiments.selectivity_check")
    ckpt = make_tiny_checkpoint(tmp_path / "tiny", evaluate_n=0)
    check.main([str(ckpt), "--n", "40"])
    out = capsys.readouterr().out
    channels = out.split("selectivity by channel: ")[1].split("\n")[0]
    assert channels.count(":") == 10  # the tiny model's 10 channels, each with a score
    tokens = out.split("presence error by token (nats): ")[1]
    assert all(f"'{d}':" in tokens for d in "0123456789")


def test_channel_balance_reports_shares_and_silent_channels(tmp_path):
    from helpers import make_tiny_checkpoint

    balance = importlib.import_module("experiments.channel_balance")
    model = load_checkpoint(make_tiny_checkpoint(tmp_path / "tiny", evaluate_n=0)).model
    with torch.no_grad():
        model.bottleneck.thresholds.fill_(-1e9)  # every pixel of every channel is active
        even = balance.balance_of(model, 4, batch_size=2)
        model.bottleneck.thresholds[1:] = 1e9  # only channel 0 fires
        one = balance.balance_of(model, 4, batch_size=2)
    assert even["share_min"] == even["share_max"] == 1.0 and even["share_cv"] == 0.0
    assert even["density"] == 1.0 and even["silent_channels"] == 0
    assert one["silent_channels"] == 9 and one["share_max"] == 10.0 and one["share_min"] == 0
    assert one["density"] == 0.1


def test_latex_density_sweep_recalibrates_to_the_asked_density(tmp_path):
    from helpers import make_tiny_checkpoint

    from sparling_core.domains import digit_circle as dc

    sweep = importlib.import_module("experiments.latex_density_sweep")
    model = load_checkpoint(make_tiny_checkpoint(tmp_path / "tiny", evaluate_n=0)).model
    images, _ = dc.collate([dc.sample(s) for s in range(6)])
    for density in (0.2, 0.01, 1e-3):
        sweep.recalibrate(model, images, density, batch_size=4)
        with torch.no_grad():
            active = model.bottleneck.active(model.sparse_motifs(images))
        per_channel = active.float().mean(dim=(0, 2, 3))  # every channel at the density
        assert torch.allclose(per_channel, torch.full_like(per_channel, density),
                              rtol=0.05, atol=2 / active[:, 0].numel())


@pytest.mark.parametrize("group", ["no-presence", "no-presence:", "topk:x", "topk;rm:1"])
def test_gpu_ablations_refuses_a_bad_group_before_starting_anything(tmp_path, group):
    import subprocess

    work = tmp_path / "work"
    proc = subprocess.run(["bash", str(ROOT / "experiments" / "gpu_ablations.sh"),
                           str(tmp_path / "out"), "untied:1", group],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "WORK": str(work)})
    assert proc.returncode == 2
    assert f"bad group '{group}'" in proc.stderr
    assert not work.exists() and not (tmp_path / "out").exists()


def test_decoder_errors_classifies_each_wrong_answer():
    errors = importlib.import_module("experiments.decoder_errors")
    assert errors.classify([1, 2, 3], [1, 2, 3]) is None
    assert errors.classify([1, 3, 2], [1, 2, 3]) == "order"
    assert errors.classify([1, 2], [1, 2, 3]) == "missing"
    assert errors.classify([1, 2, 3, 4], [1, 2, 3]) == "extra"
    assert errors.classify([1, 2, 4], [1, 2, 3]) == "other"
    assert errors.classify([1, 1, 2], [1, 2, 2]) == "other"  # same set, other counts


def test_decoder_errors_counts_a_checkpoint(tmp_path, capsys):
    errors = importlib.import_module("experiments.decoder_errors")
    shipped = ROOT / "checkpoints" / "digit-circle-mt"
    assert errors.main([str(shipped), "--n", "20", "--json", str(tmp_path / "e.json")]) == 0
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["n"] == 20
    assert report["wrong"] == sum(report[k] for k in errors.KINDS)
    assert sum(sum(c.values()) for c in report["by_length"].values()) == 20
    assert "answers wrong" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        errors.main([str(tmp_path / "nope")])


def test_decoder_errors_rule_reads_the_sorted_channels_by_majority_digit(tmp_path):
    errors = importlib.import_module("experiments.decoder_errors")
    from sparling_core.models.sparling import ChannelDecoder

    dec = ChannelDecoder(10, 100, 8, 1, 0, 0, 7)
    digit_of = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]  # channel c names digit 9 - c
    maps = torch.zeros(1, 10, 100, 100)
    # down -> right -> up: channels 2, 6, 4 in the label's angular order
    for c, (r, col) in ((2, (80, 50)), (6, (50, 80)), (4, (20, 50))):
        maps[0, c, r, col] = 1.0
    assert errors.rule_readout(dec, maps, digit_of) == [[3, 5, 7]]  # 7, 3, 5 rotated
    assert errors.rule_readout(dec, torch.zeros(1, 10, 100, 100), digit_of) == [[]]
    shipped = ROOT / "checkpoints" / "digit-circle-mt"
    report = errors.decoder_errors(shipped, 20, rule=True)
    rule = report["rule"]
    assert rule["right"] + sum(rule[k] for k in errors.KINDS) == 20
    assert sum(rule["with_decoder"].values()) == 20
    assert rule["right"] >= 15  # the shipped model's channels read right on most images
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((shipped / name).read_bytes())
    with pytest.raises(SystemExit, match="needs .*metrics.json"):
        errors.decoder_errors(bare, 5, rule=True)


def test_channel_decoder_probe_decodes_summaries_as_the_model_decodes_maps(tmp_path):
    probe = importlib.import_module("experiments.channel_decoder_probe")
    from sparling_core.models.sparling import ModelConfig, SparlingModel

    clean, labels = probe.SyntheticMaps(seed=1, jitter=1, extra=0.0).test(8)
    assert len(labels) == 8 and clean[0].shape == (8, 10, 10)
    firing = torch.tensor([len(x) for x in labels])
    assert (clean[2].sum(1) == firing).all()  # one channel per digit
    noisy, _ = probe.SyntheticMaps(seed=1, jitter=1, extra=1.0).test(8)
    assert (noisy[2].sum(1) >= firing).all() and (noisy[0] != clean[0]).any()
    torch.manual_seed(0)
    model = SparlingModel(ModelConfig(cyclic_neighbours=True)).eval()
    maps = torch.zeros(2, 10, 100, 100)
    maps[0, 3, 40, 40] = maps[0, 5, 60, 70] = maps[1, 1, 20, 30] = 1.0
    assert probe.decode(model, probe.summaries(maps)) == model.decode_motifs(maps)[0]
    out = tmp_path / "probe.json"
    assert probe.main(["--variants", "plain", "--samples", "64", "--every", "32",
                       "--test", "10", "--json", str(out)]) == 0
    curve = json.loads(out.read_text())["curves"]["plain"]
    assert [row["samples"] for row in curve] == [32, 64]
    with pytest.raises(SystemExit):
        probe.main(["--variants", "bogus"])


def test_a_run_cut_short_is_not_evaluated_and_resumes_on_the_next_call(ablations, tmp_path):
    """A run stopped before its budget (max_minutes here; SIGTERM or Ctrl-C alike) is saved
    but neither evaluated nor counted as finished; the same call again resumes it."""
    out = tmp_path / "run"
    cfg = {**json.loads(_tiny_config(tmp_path).read_text()), "out": str(out),
           "max_samples": 32, "threads": 1, "max_minutes": 1e-9}
    with pytest.raises(RuntimeError, match="stopped before its budget"):
        ablations.run_variant("mt", cfg, 4, None)
    assert not (out / "eval.json").exists()
    cfg["max_minutes"] = None
    report = ablations.run_variant("mt", cfg, 4, None)
    assert report["samples_seen"] == 32 and (out / "eval.json").exists()


def test_a_reference_checkpoint_is_the_mt_row_of_the_seed_and_config_it_was_trained_with(
        ablations, tmp_path, monkeypatch, capsys):
    """Seeded recipes take an evaluated checkpoint (the shipped recipe: the shipped
    digit-circle-mt, seed 1) as the MT row of its own seed when no run of that seed is
    found, and only when it was trained with the recipe's config; `--ship ''` ships
    nothing (it used to mean the current folder)."""
    monkeypatch.chdir(tmp_path)
    config = _tiny_config(tmp_path)
    common = ["--config", str(config), "--only", "mt", "--max-samples", "16", "--eval-n", "4",
              "--parallel", "1", "--threads", "1", "--table", str(tmp_path / "t.md")]
    assert ablations.main([*common, "--seeds", "1", "--runs", str(tmp_path / "a"),
                           "--ship", ""]) == 0
    assert not list(tmp_path.glob("ablation-*"))
    ship = tmp_path / "ship"
    assert ablations.main([*common, "--seeds", "1", "--runs", str(tmp_path / "b"),
                           "--ship", str(ship)]) == 0
    reference = ship / "ablation-mt-s1"
    table = ["--table-only", "--runs", str(tmp_path / "none"), "--ship", "", "--reference",
             str(reference)]
    assert ablations.main([*common, "--seeds", "1,2", *table]) == 0
    row = json.loads((tmp_path / "t.json").read_text())["mt"]
    expected = json.loads((reference / "metrics.json").read_text())
    assert row["seeds"] == [1] and row["mean"]["e2ee"] == expected["e2ee"]
    assert row["runs"][0]["train_minutes"] is not None
    # another seed, or the same seed with another setting, is not that checkpoint's row: a
    # call for seed 2 tables the reference as seed 1's row (every seed found), never as 2's
    assert ablations.main([*common, "--seeds", "2", *table]) == 0
    assert json.loads((tmp_path / "t.json").read_text())["mt"]["seeds"] == [1]
    capsys.readouterr()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads(config.read_text()), "lr": 5e-4}))
    assert ablations.main([*common, "--config", str(other), "--seeds", "1", *table]) == 1
    assert "no finished runs" in capsys.readouterr().err
