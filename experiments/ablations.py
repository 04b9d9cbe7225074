"""Reproduce the paper's comparison (SPEC 4): MT against ST, no BatchNorm, no annealing,
L1, KL and TopK, all with one recipe and one budget.

Every variant is the base config (configs/digit-circle-mt-untied.json: the shipped
recipe before the phase-tied motif model, without its duplicate-channel resampling unless
--resample) with a few overrides and the same sample budget
(default 160,000: where the MT run reaches the target density). Runs
go to runs/ablations/NAME (resumable: run the script again after a kill and it continues
every unfinished run from its last validation), are evaluated with the same code as
`sparling evaluate` on the same test images, and are shipped without their training state
to checkpoints/ablation-NAME for the explorer's Compare page. The table lands in
experiments/ablations.md and experiments/ablations.json.

    nohup python experiments/ablations.py --parallel 2 > runs/ablations.log 2>&1 &
    python experiments/ablations.py --only st,topk --max-samples 50000 --eval-n 1000
    python experiments/ablations.py --table-only     # the table from finished or shipped runs
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
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
}
METRICS = ("e2ee", "fpe", "fne", "ce")


def variant_config(base: dict, overrides: dict, out: Path, max_samples: int,
                   threads: int, resample: bool = False) -> dict:
    cfg = json.loads(json.dumps(base))
    cfg["model"] = dict(cfg.get("model", {}))
    # the table was measured without duplicate-channel resampling (added to the MT recipe
    # afterwards); `--resample` turns it on for every variant that anneals
    cfg["resample_duplicates"] = resample
    for key, value in overrides.items():
        if key.startswith("model."):
            cfg["model"][key.removeprefix("model.")] = value
        else:
            cfg[key] = value
    cfg.update(out=str(out), max_samples=max_samples, threads=threads)
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


def run_variant(name: str, cfg: dict, eval_n: int, ship_to: Path | None) -> dict:
    """Train (or resume) one variant, evaluate it, ship it. Runs in a worker process,
    holding RUN/.lock so that no two processes ever train the same run."""
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"another process is training {out}") from None
        handler = logging.FileHandler(out / "train.log")
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
        torch.set_num_threads(cfg["threads"])
        ckpt = load_checkpoint(out)
        report = evaluate(ckpt.model, n=eval_n, first_seed=dc.TEST_SEEDS_START)
        report.update(checkpoint=name, samples_seen=ckpt.meta["samples_seen"],
                      train_minutes=_train_minutes(ckpt.history))
        atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
    report = json.loads(report_path.read_text())
    if ship_to is not None:
        ship(out, ship_to, report)
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
    atomic_write_text(dest / "metrics.json", json.dumps(report, indent=2) + "\n")


def _fmt(value, digits: int = 2) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}"


def table(reports: dict[str, dict]) -> str:
    lines = [
        "| variant | E2EE | FPE | FNE | CE | eval density (x min) | exact match | samples "
        "| paper E2EE / FPE / FNE / CE, density |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (_, _, paper) in VARIANTS.items():
        if name not in reports:
            continue
        r = reports[name]
        paper_txt = ""
        if paper:
            paper_txt = " / ".join(str(paper[k]) if k in paper else "-" for k in METRICS)
            paper_txt += f", {paper.get('density', '')}"
        lines.append(
            f"| {name} | {_fmt(r['e2ee'])} | {_fmt(r['fpe'])} | {_fmt(r['fne'])} "
            f"| {_fmt(r['ce'])} | {r['density']:.3g} ({r['density_ratio']:.2f}x) "
            f"| {_fmt(r.get('exact_match_accuracy'), 1)} | {r.get('samples_seen', '')} "
            f"| {paper_txt} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "configs/digit-circle-mt-untied.json")
    p.add_argument("--only", help="comma-separated variants (default: all): "
                   + ", ".join(VARIANTS))
    p.add_argument("--max-samples", type=int, default=160_000,
                   help="budget per run (default: 160,000, the table's)")
    p.add_argument("--parallel", type=int, default=1, help="runs at once")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (default: cores // parallel)")
    p.add_argument("--eval-n", type=int, default=10_000, help="test images per evaluation")
    p.add_argument("--runs", type=Path, default=ROOT / "runs/ablations")
    p.add_argument("--ship", type=Path, default=ROOT / "checkpoints",
                   help="ship each as SHIP/ablation-NAME ('' to skip)")
    p.add_argument("--resample", action="store_true",
                   help="train with duplicate-channel resampling (off: as the table was made)")
    p.add_argument("--reference", type=Path, default=None,
                   help="an evaluated checkpoint for the MT row (default: RUNS/mt, else the "
                        "shipped ablation-mt)")
    p.add_argument("--table", type=Path, default=ROOT / "experiments/ablations.md",
                   help="where the markdown table goes (and its .json beside it)")
    p.add_argument("--table-only", action="store_true",
                   help="only rebuild the table from finished runs")
    args = p.parse_args(argv)

    # the MT row is the shipped checkpoint unless asked for (`--only mt` retrains it)
    names = ([n for n in VARIANTS if n != "mt"] if not args.only
             else [n.strip() for n in args.only.split(",")])
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if not args.config.is_file():
        p.error(f"config {args.config} does not exist")
    if args.parallel < 1 or args.eval_n < 1:
        p.error("--parallel and --eval-n must be >= 1")
    base = json.loads(args.config.read_text())
    budget = args.max_samples
    if budget < 1:
        p.error("--max-samples must be >= 1")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.parallel)

    reports: dict[str, dict] = {}
    if not args.table_only:
        print(f"{len(names)} runs, {budget} samples each, {args.parallel} at once with "
              f"{threads} threads, evaluated on {args.eval_n} test images", flush=True)
        jobs = {}
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(args.parallel, mp_context=ctx, initializer=exit_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            for name in names:
                cfg = variant_config(base, VARIANTS[name][0], args.runs / name, budget, threads,
                                     args.resample)
                ship_to = None if not str(args.ship) else args.ship / f"ablation-{name}"
                jobs[pool.submit(run_variant, name, cfg, args.eval_n, ship_to)] = name
            for future in as_completed(jobs):
                name = jobs[future]
                try:
                    r = future.result()
                except Exception as e:  # one failed run must not lose the others
                    print(f"{name}: FAILED: {e!r}", flush=True)
                    continue
                print(f"{name}: E2EE {r['e2ee']:.2f} FPE {r['fpe']:.2f} FNE {r['fne']:.2f} "
                      f"CE {r['ce']:.2f} density {r['density']:.3g} "
                      f"({r['density_ratio']:.2f}x min)", flush=True)
    # each row: this script's finished run, else the shipped checkpoint's evaluation
    for name in VARIANTS:
        sources = [args.runs / name / "eval.json"]
        if name == "mt" and args.reference is not None:
            sources.insert(0, args.reference / "metrics.json")
        if str(args.ship):
            sources.append(args.ship / f"ablation-{name}" / "metrics.json")
        found = next((path for path in sources if path.is_file()), None)
        if found is not None:
            reports[name] = json.loads(found.read_text())
    if not reports:
        print("no finished runs yet", file=sys.stderr)
        return 1
    text = table(reports)
    args.table.write_text(text)
    args.table.with_suffix(".json").write_text(json.dumps(
        {n: {k: r.get(k) for k in (*METRICS, "density", "density_ratio", "samples_seen",
                                   "train_minutes", "n", "exact_match_accuracy")}
         for n, r in reports.items()}, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
