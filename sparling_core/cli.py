"""The `sparling` command: train, evaluate, sample, export, serve.

Every command exits non-zero with a one-line message on bad arguments or missing files.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train and inspect Sparling models with extremely sparse activations.")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def train(
    config: Annotated[Path | None, typer.Option(help="JSON training config (see configs/)")] = None,
    out: Annotated[Path | None, typer.Option(help="checkpoint folder (overrides config)")] = None,
    resume: Annotated[bool, typer.Option(help="continue from OUT/train_state.pt")] = False,
    max_samples: Annotated[int | None, typer.Option(min=1)] = None,
    max_minutes: Annotated[float | None, typer.Option(min=0)] = None,
    val_every: Annotated[int | None, typer.Option(min=1)] = None,
    val_size: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    lr: Annotated[float | None, typer.Option(min=0)] = None,
    sparsity: Annotated[str | None, typer.Option(help="mt | st | l1 | kl | topk | none")] = None,
    model_size: Annotated[str | None, typer.Option(
        help="small (the shipped architecture; the default without a config) | tiny")] = None,
    domain: Annotated[str | None, typer.Option(
        help="registered domain to train on (default: the config's, else digit-circle)")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--data", help="train on your own data: a folder with labels.jsonl "
        "(README: Your own data)")] = None,
    seed: Annotated[int | None, typer.Option(help="weight initialisation seed")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch")] = None,
    nproc: Annotated[int, typer.Option(min=1, help=(
        "local worker processes (data parallel: torch.distributed, gloo on CPU, NCCL on "
        "CUDA); the batch size stays the global batch"))] = 1,
    device: Annotated[str | None, typer.Option(help="cpu | cuda (default: the config's, "
                                                    "else cpu)")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    force: Annotated[bool, typer.Option(
        help="start afresh even if OUT already holds a checkpoint (it is replaced)")] = False,
    verbose: Annotated[bool, typer.Option("--verbose/--quiet", "-v/-q",
                                          help="log every validation")] = True,
) -> None:
    """Train a model on a domain or a data folder (config file and/or flags; flags win).
    Under torchrun (several machines) every process runs this command and joins torchrun's
    group."""
    from .training.loop import build_train_config, read_config_file

    _setup_logging(verbose)
    data: dict = {}
    if config is not None:
        try:
            data = read_config_file(config)
        except ValueError as e:
            _fail(str(e))
    overrides = dict(out=out, max_samples=max_samples, max_minutes=max_minutes,
                     val_every=val_every, val_size=val_size, batch_size=batch_size, lr=lr,
                     seed=seed, threads=threads, device=device)
    data.update({k: (str(v) if isinstance(v, Path) else v)
                 for k, v in overrides.items() if v is not None})
    try:
        cfg = build_train_config(data, model_size=model_size, sparsity=sparsity,
                                 domain=domain, data_dir=data_dir)
    except ValueError as e:  # also FolderError: bad data, named by file and line
        _fail(str(e))
    from .training import distributed
    from .training.loop import train as run

    if resume:
        _check_resumable(Path(cfg.out), cfg.model.to_dict())
    if nproc > 1 and distributed.under_torchrun():
        _fail("--nproc starts its own workers; under torchrun give --nproc-per-node instead")
    if cfg.batch_size % nproc:
        _fail(f"batch size {cfg.batch_size} (the global batch) must be divisible by "
              f"--nproc {nproc}")
    try:
        if distributed.under_torchrun():  # one of torchrun's workers
            written = distributed.worker(cfg.to_dict(), resume, progress, verbose=False)
        elif nproc > 1:
            written = distributed.launch(cfg.to_dict(), nproc, resume, progress, verbose)
        else:
            written = run(cfg, resume=resume, progress=progress, force=force)
    except ValueError as e:  # CheckpointError, FolderError, a config that misfits the domain
        _fail(str(e))
    except Exception as e:  # a failed worker (torch's ChildFailedError) or a bad device
        if nproc == 1 and not distributed.under_torchrun():
            raise
        _fail(f"distributed training failed: {type(e).__name__}: {e}", code=1)
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"checkpoint: {written}")


# what a resumed run must share with the saved one (the weights' shapes and the tokens)
_RESUME_KEYS = ("domain", "vocabulary", "vocab_size", "image_size", "max_digits", "decoder",
                "motif_channels", "motif_width", "motif_layers", "d_model")


def _check_resumable(out: Path, model: dict) -> None:
    """--resume: the saved checkpoint's model must match the one this command builds."""
    from .checkpoint import CONFIG_FILE

    path = out / CONFIG_FILE
    if not path.is_file():
        return  # nothing saved yet: the trainer starts from scratch
    try:
        saved = json.loads(path.read_text()).get("model", {})
    except (json.JSONDecodeError, AttributeError):
        _fail(f"{path} is not a valid checkpoint config; cannot resume")
    wrong = [f"{k} {saved.get(k)!r} -> {model.get(k)!r}" for k in _RESUME_KEYS
             if k in saved and saved.get(k) != model.get(k)]
    if wrong:
        _fail(f"cannot resume {out}: this command builds a different model ("
              + "; ".join(wrong) + "); repeat the original command with --resume")


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint folder")],
    n: Annotated[int | None, typer.Option("--n", min=1, help="number of test images "
                 "(default: 10,000; a data folder: all of its split)")] = None,
    first_seed: Annotated[int | None, typer.Option(
        min=0, help="default: the split's first (a data folder: index 0)")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the report here")
                         ] = None,
    update_metrics: Annotated[bool, typer.Option(
        "--update-metrics", help="write the report to CHECKPOINT/metrics.json (what the "
        "API serves; a shipped checkpoint's metrics.json is tracked by git)")] = False,
    split: Annotated[str, typer.Option(help="train | val | test")] = "test",
    data_dir: Annotated[Path | None, typer.Option(
        "--data", help="evaluate on a data folder (labels.jsonl; default: the checkpoint's "
        "own folder, if it was trained on one)")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 100,
    device: Annotated[str, typer.Option(help="cpu | cuda: where the model runs")] = "cpu",
    threads: Annotated[int | None, typer.Option(min=1, help=(
        "CPU threads for torch (default: torch's, all cores; beside a training run give "
        "the cores it leaves free, since oversubscribed threads run many times slower)"))
    ] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Motif metrics (FPE, FNE, CE, E2EE in percent) and density on N test images."""
    import torch

    from .analysis.evaluate import evaluate as run
    from .checkpoint import CheckpointError, atomic_write_text, load_checkpoint
    from .domains import SPLITS, FolderDomain, FolderError, get_domain
    from .domains.folder import folder_of

    if split not in SPLITS:
        _fail(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if device not in ("cpu", "cuda"):
        _fail(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        _fail("--device cuda asked for, but torch sees no CUDA device")
    if not checkpoint.is_dir():
        _fail(f"checkpoint folder {checkpoint} does not exist")
    if (json_path is None) == (not update_metrics):
        _fail("say where the report goes: --json PATH, or --update-metrics to rewrite "
              "CHECKPOINT/metrics.json" if json_path is None else
              "give --json PATH or --update-metrics, not both")
    target = json_path if json_path is not None else checkpoint / "metrics.json"
    if not target.parent.is_dir():  # fail now, not after minutes of evaluation
        _fail(f"cannot write {target}: folder {target.parent} does not exist")
    if target.is_dir():
        _fail(f"cannot write {target}: it is a folder")
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        ckpt = load_checkpoint(checkpoint, device=device)
    except CheckpointError as e:
        _fail(str(e))
    data_dir = data_dir or folder_of(ckpt.config.domain)
    try:
        if data_dir is None:
            domain = get_domain(ckpt.config.domain)
            n = n or min(10_000, len(domain.split_range(split)))
        else:
            domain = _folder_for(ckpt, data_dir, FolderDomain)
            domain.require_split(split, "evaluation")
            n = n or len(domain.split_range(split))
        report = run(ckpt.model, n=n, first_seed=first_seed, batch_size=batch_size,
                     progress=progress, domain=domain, split=split)
    except (FolderError, ValueError, IndexError) as e:
        _fail(str(e))
    report["checkpoint"] = ckpt.name
    report["samples_seen"] = ckpt.meta.get("samples_seen")
    text = json.dumps(report, indent=2) + "\n"
    atomic_write_text(target, text)
    def pct(key: str) -> str:
        return "n/a" if report.get(key) is None else f"{report[key]:.2f}%"

    ratio = report.get("density_ratio")
    typer.echo(
        f"{ckpt.name} ({report['domain']}): n={report['n']} E2EE={pct('e2ee')} "
        f"FPE={pct('fpe')} FNE={pct('fne')} CE={pct('ce')} density={report['density']:.3g}"
        + (f" ({ratio:.2f}x min)" if ratio is not None else "") + f" -> {target}")


def _folder_for(ckpt, data_dir: Path, folder_domain):
    """The data folder as the checkpoint's model reads it: its tokens by the model's ids
    (the checkpoint's saved vocabulary, else its domain's), its images the model's size."""
    from .domains import get_domain

    config = ckpt.config
    tokens = config.vocabulary
    if tokens is None:
        try:
            tokens = get_domain(config.domain).vocabulary
        except ValueError as e:
            raise ValueError(f"{ckpt.path} does not save its vocabulary and its domain cannot "
                             f"be loaded ({e})") from None
    if len(tokens) != config.vocab_size:
        raise ValueError(f"{ckpt.path}: {len(tokens)} tokens but vocab_size "
                         f"{config.vocab_size}")
    folder = folder_domain(data_dir, vocabulary=tokens)
    if tuple(folder.image_shape) != config.image_shape:
        h, w = folder.image_shape
        raise ValueError(f"{folder.folder}: images are {h}x{w} but the model reads "
                         f"{config.image_shape[0]}x{config.image_shape[1]}")
    return folder


@app.command()
def sample(
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="the sample's seed")],
    out: Annotated[Path, typer.Option(help="output folder (created)")],
    domain: Annotated[str, typer.Option(help="registered domain")] = "digit-circle",
    split: Annotated[str, typer.Option(help="train | val | test (folder domains)")] = "train",
) -> None:
    """Write OUT/SEED.png (ink white on black) and OUT/SEED.json (label tokens and motifs)."""
    import numpy as np
    from PIL import Image

    from .domains import get_domain

    try:
        chosen = get_domain(domain)
        s = chosen.sample(seed, split)
    except (ValueError, IndexError) as e:
        _fail(str(e))
    if out.exists() and not out.is_dir():
        _fail(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(np.round(np.asarray(s.image, dtype=np.float64) * 255), 0, 255)
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(out / f"{seed}.png")
    payload = {"domain": chosen.name, **s.to_dict()}
    (out / f"{seed}.json").write_text(json.dumps(payload, indent=2) + "\n")
    typer.echo(f"{out / f'{seed}.png'}: label {' '.join(s.label)}")


@app.command()
def export(
    domain: Annotated[str, typer.Option(help="registered domain (or folder:/path)")],
    n: Annotated[int, typer.Option("--n", min=1, help="number of images")],
    out: Annotated[Path, typer.Option(help="data folder to write (must be absent or empty)")],
    first_seed: Annotated[int | None, typer.Option(
        min=0, help="default: the split's first seed")] = None,
    split: Annotated[str, typer.Option(help="the domain's split to draw seeds from")] = "train",
    mark_split: Annotated[bool, typer.Option(
        help='write "split": SPLIT on every line (default: leave it out, so the folder\'s '
        "seeded 90/5/5 split applies)")] = False,
    force: Annotated[bool, typer.Option(help="replace a non-empty OUT")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Write N samples of a domain as a data folder (images/SEED.png + labels.jsonl)."""
    from .domains import SPLITS, get_domain
    from .domains.folder import LABELS_FILE, export_domain

    if split not in SPLITS:
        _fail(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    try:
        chosen = get_domain(domain)
        written = export_domain(chosen, out, n, first_seed=first_seed, split=split,
                                force=force, mark_split=mark_split, progress=progress)
    except (ValueError, IndexError, OSError) as e:
        _fail(str(e))
    typer.echo(f"{written / LABELS_FILE}: {n} images of {chosen.name} ({split})")


@app.command()
def serve(
    checkpoints: Annotated[Path, typer.Option(help="folder of checkpoint folders")] = Path(
        "checkpoints"),
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
) -> None:
    """Start the REST backend (uvicorn backend.main:app) on the given checkpoints."""
    if not checkpoints.is_dir():
        _fail(f"checkpoints folder {checkpoints} does not exist")
    try:
        import uvicorn  # noqa: F401

        from backend import SERVER_GOMP_SPINCOUNT
    except ImportError:
        _fail("the backend needs the serve extra: pip install -e '.[serve]'")
    # A fresh process, not uvicorn.run here: this one has loaded torch, and with it
    # libgomp, which reads GOMP_SPINCOUNT only when it loads (backend/__init__.py).
    env = {**os.environ, "SPARLING_CHECKPOINTS": str(checkpoints.resolve())}
    env.setdefault("GOMP_SPINCOUNT", SERVER_GOMP_SPINCOUNT)
    command = [sys.executable, "-m", "uvicorn", "backend.main:app", "--host", host,
               "--port", str(port)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, env)


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
