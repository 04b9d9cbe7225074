"""Reproduce the paper's comparison (SPEC 4) like for like: MT against ST, no BatchNorm, no
annealing, L1, KL and TopK, and the project's own aids (presence loss, duplicate-channel
resampling, phase tying, the angular channel decoder) each taken away, one change per row,
one recipe, one sample budget, several seeds.

Three recipes (`--recipe`):
- `shipped` (default): configs/digit-circle-mt.json, the recipe of checkpoints/digit-circle-mt
  (phase-tied motif model, presence loss, resampling, channel decoder), 300,000 samples a
  run (the shipped run reached its best accuracy by then), seeds `--seeds` (default 1,2).
  Runs are NAME-sS: runs/ablations/NAME-sS, shipped as checkpoints/ablation-NAME-sS; the
  table (mean and [min, max] over seeds) lands in experiments/ablations-shipped.md / .json.
- `fast`: configs/digit-circle-mt-fast.json (the shipped recipe's aids plus the trunk
  presence head, a density cut every 2,000 samples and a 60,000-sample finish; it stops by
  itself at 140,000-180,000 samples), 180,000 samples a run for every row (`finish_samples`
  is raised to the budget so that no row stops before it), seeds 1,2. Runs are
  fast-NAME-sS, shipped as checkpoints/ablation-fast-NAME-sS; table in
  experiments/ablations-fast.md / .json. Sized for a lent GPU: `--device cuda --parallel 4
  --threads 3` trains four runs side by side at about 600 samples/s each on an H200.
- `legacy`: the first table's recipe, configs/digit-circle-mt-untied.json without
  resampling, 160,000 samples, one seed; runs are NAME, shipped as checkpoints/ablation-NAME,
  table in experiments/ablations.md / .json (the MT row is the shipped ablation-mt unless
  `--only mt` retrains it).

Every run is resumable: run the script again after a kill and it continues every unfinished
run from its last validation. Each is evaluated with the same code as `sparling evaluate` on
the same test images, and shipped without its training state for the explorer's Compare page.

    nohup python experiments/ablations.py --only mt,st --seeds 1,2 --parallel 2 \
        > runs/ablations.log 2>&1 &
    python experiments/ablations.py --recipe legacy --only st,topk --max-samples 50000
    python experiments/ablations.py --table-only     # the table from finished or shipped runs
    python experiments/ablations.py --recipe fast --only mt,st --seeds 1,2 --device cuda \
        --parallel 4 --threads 3
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import multiprocessing as mp
import os
import re
import shutil
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sparling_core.analysis.evaluate import PAPER_DENSITY  # noqa: E402

# name -> (overrides of the base config, what it tests, the paper's numbers (SPEC 4))
VARIANTS: dict[str, tuple[dict, str, dict | None]] = {
    "mt": ({}, "Sparling MT (per-channel thresholds, BatchNorm, annealing)",
           {"e2ee": 0.74, "fpe": 1.48, "fne": 0.42, "ce": 1.16, "density": "5.02e-5"}),
    "st": ({"model.sparsity": "st"}, "one threshold for all channels",
           {"e2ee": 2.11, "fpe": 0.0025, "fne": 0.98, "ce": 22.19, "density": "5.02e-5"}),
    "no-batchnorm": ({"model.batch_norm": False}, "MT without BatchNorm",
                     {"e2ee": "~72", "density": "5.02e-5"}),
    "no-annealing": ({"schedule": "fixed", "model.initial_density": PAPER_DENSITY},
                     "MT at the target density from the first step",
                     {"e2ee": "68-71", "density": "5.02e-5"}),
    "l1-0.1": ({"model.sparsity": "l1", "model.penalty_weight": 0.1, "schedule": "fixed"},
               "ReLU + 0.1 * mean|y|",
               {"e2ee": 0.68, "fpe": 99.99, "fne": 0, "ce": 50.3, "density": "37%"}),
    "l1-1": ({"model.sparsity": "l1", "model.penalty_weight": 1.0, "schedule": "fixed"},
             "ReLU + 1 * mean|y|",
             {"e2ee": 2.85, "fpe": 99.90, "fne": 0, "ce": 47.8, "density": "4.6%"}),
    "l1-2": ({"model.sparsity": "l1", "model.penalty_weight": 2.0, "schedule": "fixed"},
             "ReLU + 2 * mean|y|",
             {"e2ee": 70.3, "fpe": 91.3, "fne": 58.1, "ce": 45.7, "density": "0.021%"}),
    "kl-0.1": ({"model.sparsity": "kl", "model.penalty_weight": 0.1, "schedule": "fixed"},
               "sigmoid + 0.1 * KL(p || mean y), p = 5.02e-5", None),
    "kl-1": ({"model.sparsity": "kl", "model.penalty_weight": 1.0, "schedule": "fixed"},
             "sigmoid + 1 * KL(p || mean y), p = 5.02e-5", None),
    "topk": ({"model.sparsity": "topk"}, "per-image top-k, annealed like MT", None),
    # the project's own aids, each taken away (the paper has none of them)
    "no-presence": ({"model.presence_weight": 0.0}, "without the presence loss", None),
    # ST without the presence loss: the test of whether the presence loss (which asks every
    # channel to fire exactly when its token is present) does the balancing between
    # channels that MT's per-channel thresholds do in the paper (two changes, on purpose)
    "st-no-presence": ({"model.sparsity": "st", "model.presence_weight": 0.0},
                       "ST without the presence loss", None),
    "no-resample": ({"resample_duplicates": False},
                    "without duplicate-channel resampling", None),
    "untied": ({"model.phase_tied": False},
               "an untied half-resolution motif model instead of the phase-tied one", None),
    "generic-decoder": ({"model.decoder": "points"},
                        "the generic point decoder instead of the angular channel decoder",
                        None),
}


@dataclass(frozen=True)
class Recipe:
    config: Path  # the base config every variant overrides
    budget: int  # samples per run
    seeds: tuple[int, ...]  # default weight-initialisation seeds
    resample: bool | None  # force duplicate-channel resampling on / off (None: the config's)
    table: Path  # where the markdown table goes (its .json beside it)
    seeded_names: bool  # runs named NAME-sS (else NAME, one seed)
    prefix: str = ""  # before every run's name (recipes must not share run folders)
    finish_to_budget: bool = False  # finish_samples = the budget: every row trains it all
    # an evaluated checkpoint trained with this recipe's config: the MT row of its seed when
    # this script has not trained that seed itself (see `reference_report`)
    reference: Path | None = None


RECIPES = {
    "shipped": Recipe(ROOT / "configs/digit-circle-mt.json", 300_000, (1, 2), None,
                      ROOT / "experiments/ablations-shipped.md", True,
                      reference=ROOT / "checkpoints/digit-circle-mt"),
    "legacy": Recipe(ROOT / "configs/digit-circle-mt-untied.json", 160_000, (1,), False,
                     ROOT / "experiments/ablations.md", False),
    "fast": Recipe(ROOT / "configs/digit-circle-mt-fast.json", 180_000, (1, 2), None,
                   ROOT / "experiments/ablations-fast.md", True, prefix="fast-",
                   finish_to_budget=True),
}
METRICS = ("e2ee", "fpe", "fne", "ce")


def variant_config(base: dict, overrides: dict, out: Path, max_samples: int,
                   threads: int, resample: bool | None = None, seed: int | None = None,
                   device: str | None = None, finish_to_budget: bool = False) -> dict:
    """The base config with a variant's overrides, its run folder, budget and threads.
    `resample` True / False forces duplicate-channel resampling on / off for every variant
    (the legacy table was measured without it; None keeps the base config's); a variant's
    own override wins. `seed`: the weight-initialisation seed (None: the base config's).
    `device`: cpu | cuda (None: the base config's). `finish_to_budget`: finish_samples =
    max_samples, so that a run that reaches the target density still trains the budget.
    The base config's `max_minutes` is dropped: every row trains its sample budget."""
    cfg = json.loads(json.dumps(base))
    cfg["model"] = dict(cfg.get("model", {}))
    if resample is not None:
        cfg["resample_duplicates"] = resample
    if seed is not None:
        cfg["seed"] = seed
    if device is not None:
        cfg["device"] = device
    if finish_to_budget:
        cfg["finish_samples"] = max_samples
    for key, value in overrides.items():
        if key.startswith("model."):
            cfg["model"][key.removeprefix("model.")] = value
        else:
            cfg[key] = value
    # the budget is in samples: no wall-clock limit (it would make a row's budget depend on
    # how busy the machine was)
    cfg.update(out=str(out), max_samples=max_samples, threads=threads, max_minutes=None)
    return cfg


def exit_with_parent(parent: int) -> None:
    """Worker initializer: a worker whose script was killed exits too (within a second)
    instead of training on as an orphan beside the next run of the script."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class RunLocked(RuntimeError):
    pass


def run_files(out: Path) -> tuple[Path, Path]:
    """RUN's lock and log: beside the run folder, not in it. Every checkpoint save replaces
    the folder with a new generation, so a lock or a log inside it would be unlinked at the
    first save (the lock would then stop nobody; the log would go to a deleted file)."""
    return out.parent / f".{out.name}.lock", out.parent / f"{out.name}.log"


def run_variant(name: str, cfg: dict, eval_n: int, ship_to: Path | None) -> dict:
    """Train (or resume) one variant, evaluate it, ship it. Runs in a worker process,
    holding RUN's lock so that no two processes ever train the same run; logs to RUN.log."""
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    lock_path, log_path = run_files(out)
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"another process is training {out}") from None
        handler = logging.FileHandler(log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            return _train_evaluate_ship(name, cfg, out, eval_n, ship_to)
        finally:
            root.removeHandler(handler)
            handler.close()


def _train_evaluate_ship(name: str, cfg: dict, out: Path, eval_n: int,
                         ship_to: Path | None) -> dict:
    import torch

    from sparling_core.analysis.evaluate import evaluate
    from sparling_core.checkpoint import atomic_write_text, load_checkpoint, load_train_state
    from sparling_core.domains import digit_circle as dc
    from sparling_core.training.loop import TrainConfig, train

    report_path = out / "eval.json"
    state = load_train_state(out)
    finished = (report_path.exists() and state is not None
                and json.loads(report_path.read_text()).get("samples_seen")
                == state["samples_seen"])
    if not finished:
        started = time.monotonic()
        train(TrainConfig.from_dict(cfg), resume=True, progress=False)
        logging.info("%s: training took %.1f min in this process", name,
                     (time.monotonic() - started) / 60)
        if not load_train_state(out).get("complete", True):  # a signal stopped it early
            raise RuntimeError(f"{name} stopped before its budget (saved; rerun the same "
                               "command to resume it)")
        torch.set_num_threads(cfg["threads"])
        ckpt = load_checkpoint(out, device=cfg.get("device", "cpu"))
        report = evaluate(ckpt.model, n=eval_n, first_seed=dc.TEST_SEEDS_START)
        report.update(checkpoint=name, samples_seen=ckpt.meta["samples_seen"],
                      train_minutes=_train_minutes(ckpt.history))
        atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
    report = json.loads(report_path.read_text())
    if ship_to is not None:
        ship(out, ship_to, report)
    return report


# settings that do not change what a run learns (where it is saved, its threads, its limits)
RUN_ONLY_KEYS = frozenset({"out", "threads", "max_samples", "max_minutes", "device"})


def reference_report(reference: Path, cfg: dict) -> dict | None:
    """REFERENCE's evaluation (its metrics.json, with wall minutes from its history) as the
    row of the run `cfg` describes, or None when REFERENCE was trained with another seed or
    any other setting than `cfg`'s (the run-only keys aside: its sample budget may differ,
    which the table shows in its samples column). The shipped checkpoint is seed 1 of the
    shipped recipe, so that seed need not be trained twice."""
    from sparling_core.training.loop import TrainConfig

    metrics, saved = reference / "metrics.json", reference / "config.json"
    if not (metrics.is_file() and saved.is_file()):
        return None
    try:  # through TrainConfig both ways: settings added since it was saved take defaults
        theirs = TrainConfig.from_dict(json.loads(saved.read_text())["train"]).to_dict()
    except (KeyError, TypeError, ValueError):
        return None
    ours = TrainConfig.from_dict(cfg).to_dict()
    for key, value in ours.items():
        if key in RUN_ONLY_KEYS or (key == "bf16" and None in (value, theirs[key])):
            continue  # bf16 None: auto, which is on wherever the other was trained with it
        if theirs[key] != value:
            return None
    report = json.loads(metrics.read_text())
    history = reference / "history.jsonl"
    if "train_minutes" not in report and history.is_file():
        rows = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
        report["train_minutes"] = _train_minutes(rows)
    report["reference"] = str(reference)
    return report


def _train_minutes(history: list[dict]) -> float:
    """Wall minutes over every resume: the sum of each segment's last wall_s."""
    total, last = 0.0, 0.0
    for row in history:
        if row["wall_s"] < last:  # a resume restarts the clock
            total += last
        last = row["wall_s"]
    return round((total + last) / 60, 1)


def ship(run: Path, dest: Path, report: dict) -> None:
    """Copy the checkpoint (weights, config, history) without its training state."""
    from sparling_core.checkpoint import atomic_write_text

    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "config.json", "history.jsonl", "train.log"):
        if (run / name).exists():
            shutil.copyfile(run / name, dest / name)
    log = run_files(run)[1]
    if log.exists():  # this script's log of the run (a train.log in the folder is older)
        shutil.copyfile(log, dest / "train.log")
    atomic_write_text(dest / "metrics.json", json.dumps(report, indent=2) + "\n")


def _fmt(value, digits: int = 2) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}"


def _spread(values: list[float], digits: int = 2) -> str:
    """One seed: the value; several: mean [min, max]."""
    if len(values) == 1:
        return _fmt(values[0], digits)
    mean = sum(values) / len(values)
    return f"{mean:.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def summarise(runs: list[dict]) -> dict:
    """Mean, min and max of every metric over a variant's seeds (runs: their reports)."""
    keys = (*METRICS, "density", "density_ratio", "exact_match_accuracy", "train_minutes")
    out: dict = {"seeds": [r.get("seed") for r in runs], "n_seeds": len(runs)}
    for stat, fn in (("mean", lambda v: sum(v) / len(v)), ("min", min), ("max", max)):
        out[stat] = {k: fn([r[k] for r in runs]) for k in keys
                     if all(isinstance(r.get(k), (int, float)) for r in runs)}
    out["samples_seen"] = sorted({r.get("samples_seen") for r in runs}, key=str)
    out["runs"] = runs
    return out


def table(reports: dict[str, list[dict]]) -> str:
    """One row per variant: each metric as the value (one seed) or mean [min, max]."""
    lines = [
        "| variant | seeds | E2EE | FPE | FNE | CE | eval density (x min) | exact match "
        "| samples | train min | paper E2EE / FPE / FNE / CE, density |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (_, _, paper) in VARIANTS.items():
        runs = reports.get(name)
        if not runs:
            continue
        paper_txt = ""
        if paper:
            paper_txt = " / ".join(str(paper[k]) if k in paper else "-" for k in METRICS)
            paper_txt += f", {paper.get('density', '')}"
        seeds = ", ".join(str(r["seed"]) for r in runs if r.get("seed") is not None) or "-"
        density = sum(r["density"] for r in runs) / len(runs)
        ratio = sum(r["density_ratio"] for r in runs) / len(runs)
        exact = [r["exact_match_accuracy"] for r in runs if r.get("exact_match_accuracy")
                 is not None]
        minutes = [r["train_minutes"] for r in runs if r.get("train_minutes") is not None]
        samples = "/".join(sorted({str(r.get("samples_seen", "")) for r in runs}))
        lines.append(
            f"| {name} | {seeds} | "
            + " | ".join(_spread([r[k] for r in runs]) for k in METRICS)
            + f" | {density:.3g} ({ratio:.2f}x) | {_spread(exact, 1) if exact else ''} "
            f"| {samples} | {_spread(minutes, 0) if minutes else ''} | {paper_txt} |")
    return "\n".join(lines) + "\n"


def _optional_path(text: str) -> Path | None:
    """A path argument where '' means none (Path('') would be the current folder)."""
    return Path(text) if text else None


def _seeds_on_disk(run_stem: str, runs: Path, ship: Path | None) -> set[int]:
    """The seeds S of every run folder RUN_STEM-sS under `runs` and ablation-RUN_STEM-sS
    under `ship` (finished or not: the table then takes those with a report)."""
    found = set()
    for folder, pattern in ((runs, re.escape(run_stem) + r"-s(\d+)"),
                            (ship, "ablation-" + re.escape(run_stem) + r"-s(\d+)")):
        if folder is not None and folder.is_dir():
            for path in folder.iterdir():
                if path.is_dir() and (match := re.fullmatch(pattern, path.name)):
                    found.add(int(match.group(1)))
    return found


def _parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must name one or more different seeds, got {text!r}")
    return seeds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=sorted(RECIPES), default="shipped",
                   help="shipped (default: the recipe of checkpoints/digit-circle-mt, seeds, "
                        "runs NAME-sS) or legacy (the first table: untied, no resampling)")
    p.add_argument("--config", type=Path, default=None,
                   help="base config (default: the recipe's)")
    p.add_argument("--only", help="comma-separated variants (default: all): "
                   + ", ".join(VARIANTS))
    p.add_argument("--seeds", default=None,
                   help="comma-separated weight seeds (default: the recipe's: shipped 1,2; "
                        "legacy 1, named without a suffix)")
    p.add_argument("--max-samples", type=int, default=None,
                   help="budget per run (default: the recipe's: shipped 300,000, legacy "
                        "160,000)")
    p.add_argument("--parallel", type=int, default=1, help="runs at once")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where runs train and are evaluated (default: the config's, else cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (default: cores // parallel)")
    p.add_argument("--eval-n", type=int, default=10_000, help="test images per evaluation")
    p.add_argument("--runs", type=Path, default=ROOT / "runs/ablations")
    p.add_argument("--ship", type=_optional_path, default=ROOT / "checkpoints",
                   help="ship each as SHIP/ablation-RUN ('' to skip)")
    p.add_argument("--resample", action=argparse.BooleanOptionalAction, default=None,
                   help="force duplicate-channel resampling on or off for every variant "
                        "(default: the recipe's: legacy off, shipped as its config)")
    p.add_argument("--reference", default=None,
                   help="legacy: an evaluated checkpoint for the MT row (default: RUNS/mt, "
                        "else the shipped ablation-mt); seeded recipes: the MT row of the "
                        "seed it was trained with, when no run of that seed is found, and "
                        "only if its config is the recipe's (default: shipped: "
                        "checkpoints/digit-circle-mt; '' for none)")
    p.add_argument("--table", type=Path, default=None,
                   help="where the markdown table goes, its .json beside it (default: the "
                        "recipe's)")
    p.add_argument("--table-only", action="store_true",
                   help="only rebuild the table from finished runs")
    args = p.parse_args(argv)
    recipe = RECIPES[args.recipe]
    config = args.config or recipe.config
    table_path = args.table or recipe.table
    resample = recipe.resample if args.resample is None else args.resample
    reference = recipe.reference if args.reference is None else _optional_path(args.reference)
    try:
        seeds = _parse_seeds(args.seeds) if args.seeds else recipe.seeds
    except ValueError as e:
        p.error(str(e))
    if not recipe.seeded_names and len(seeds) > 1:
        p.error("the legacy recipe names runs without a seed: give one --seeds value")

    # legacy: the MT row is the shipped checkpoint unless asked for (`--only mt` retrains it)
    if args.only:
        names = [n.strip() for n in args.only.split(",")]
    else:
        names = [n for n in VARIANTS if recipe.seeded_names or n != "mt"]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if not config.is_file():
        p.error(f"config {config} does not exist")
    if args.parallel < 1 or args.eval_n < 1:
        p.error("--parallel and --eval-n must be >= 1")
    if args.device == "cuda" and not args.table_only:
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda asked for, but torch sees no CUDA device")
    base = json.loads(config.read_text())
    budget = args.max_samples if args.max_samples is not None else recipe.budget
    if budget < 1:
        p.error("--max-samples must be >= 1")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.parallel)

    def run_name(name: str, seed: int) -> str:
        return recipe.prefix + (f"{name}-s{seed}" if recipe.seeded_names else name)

    if not args.table_only:
        runs = [(n, s) for n in names for s in seeds]
        print(f"{len(runs)} runs ({len(names)} variants x seeds {', '.join(map(str, seeds))}), "
              f"{budget} samples each, {args.parallel} at once with {threads} threads, "
              f"evaluated on {args.eval_n} test images; base {config}", flush=True)
        jobs = {}
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(args.parallel, mp_context=ctx, initializer=exit_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            for name, seed in runs:
                run = run_name(name, seed)
                cfg = variant_config(base, VARIANTS[name][0], args.runs / run, budget, threads,
                                     resample, seed if recipe.seeded_names else None,
                                     args.device, recipe.finish_to_budget)
                ship_to = None if args.ship is None else args.ship / f"ablation-{run}"
                jobs[pool.submit(run_variant, run, cfg, args.eval_n, ship_to)] = run
            for future in as_completed(jobs):
                run = jobs[future]
                try:
                    r = future.result()
                except Exception as e:  # one failed run must not lose the others
                    print(f"{run}: FAILED: {e!r}", flush=True)
                    continue
                print(f"{run}: E2EE {r['e2ee']:.2f} FPE {r['fpe']:.2f} FNE {r['fne']:.2f} "
                      f"CE {r['ce']:.2f} density {r['density']:.3g} "
                      f"({r['density_ratio']:.2f}x min)", flush=True)
    # each run: this script's finished run, else the shipped checkpoint's evaluation; a
    # table over every variant and seed found (not only those of this call)
    reports: dict[str, list[dict]] = {}
    for name in VARIANTS:
        table_seeds = (sorted(set(seeds) | set(recipe.seeds)
                              | _seeds_on_disk(recipe.prefix + name, args.runs, args.ship))
                       if recipe.seeded_names else (None,))
        for seed in table_seeds:
            run = run_name(name, seed) if seed is not None else name
            sources = [args.runs / run / "eval.json"]
            if name == "mt" and not recipe.seeded_names and reference is not None:
                sources.insert(0, reference / "metrics.json")
            if args.ship is not None:
                sources.append(args.ship / f"ablation-{run}" / "metrics.json")
            found = next((path for path in sources if path.is_file()), None)
            report = json.loads(found.read_text()) if found is not None else None
            if report is None and name == "mt" and recipe.seeded_names and reference:
                report = reference_report(reference, variant_config(
                    base, VARIANTS[name][0], args.runs / run, budget, threads, resample, seed,
                    args.device, recipe.finish_to_budget))
            if report is not None:
                report["seed"] = seed
                reports.setdefault(name, []).append(report)
    if not reports:
        print("no finished runs yet", file=sys.stderr)
        return 1
    text = table(reports)
    table_path.write_text(text)
    keys = (*METRICS, "density", "density_ratio", "samples_seen", "train_minutes", "n",
            "exact_match_accuracy", "seed")
    table_path.with_suffix(".json").write_text(json.dumps(
        {n: summarise([{k: r.get(k) for k in keys} for r in runs])
         for n, runs in reports.items()}, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
