"""The `sparling` command: train, evaluate, sample, serve.

Every command exits non-zero with a one-line message on bad arguments or missing files.
"""

from __future__ import annotations

import json
import logging
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
    seed: Annotated[int | None, typer.Option(help="weight initialisation seed")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    force: Annotated[bool, typer.Option(
        help="start afresh even if OUT already holds a checkpoint (it is replaced)")] = False,
    verbose: Annotated[bool, typer.Option("--verbose/--quiet", "-v/-q",
                                          help="log every validation")] = True,
) -> None:
    """Train a model on a domain (config file and/or flags; flags win)."""
    from .domains import get_domain
    from .models.sparling import digit_circle_small, digit_circle_tiny
    from .training.loop import TrainConfig

    _setup_logging(verbose)
    data: dict = {}
    if config is not None:
        if not config.is_file():
            _fail(f"config file {config} does not exist")
        try:
            data = json.loads(config.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as e:
            _fail(f"config file {config} is not UTF-8 text: {e}")
        except (json.JSONDecodeError, RecursionError) as e:
            _fail(f"config file {config} is not valid JSON: {e}")
        except OSError as e:
            _fail(f"config file {config} cannot be read: {e.strerror}")
        if not isinstance(data, dict):
            _fail(f"config file {config} must hold a JSON object")
    if not isinstance(data.get("model", {}), dict):
        _fail(f"config file {config}: \"model\" must be a JSON object of model settings, "
              f"got {data['model']!r}"[:300])
    model = dict(data.get("model", {}))
    if model_size == "tiny":
        model = {**digit_circle_tiny().to_dict(), **model}
    elif model_size == "small" or (model_size is None and not model):
        model = {**digit_circle_small().to_dict(), **model}
    elif model_size is not None:
        _fail(f"--model-size must be small or tiny, got {model_size!r}")
    if sparsity is not None:
        model["sparsity"] = sparsity
    if domain is not None:
        model["domain"] = domain
    try:
        chosen = get_domain(model.get("domain"))
    except ValueError as e:
        _fail(str(e))
    # the domain fixes vocabulary, label length and image shape; the config may set channels
    fixed = chosen.model_config_overrides()
    model = {**model, **{k: v for k, v in fixed.items()
                         if k != "motif_channels" or "motif_channels" not in model},
             "domain": chosen.name}
    data["model"] = model
    overrides = dict(out=out, max_samples=max_samples, max_minutes=max_minutes,
                     val_every=val_every, val_size=val_size, batch_size=batch_size, lr=lr,
                     seed=seed, threads=threads)
    data.update({k: (str(v) if isinstance(v, Path) else v)
                 for k, v in overrides.items() if v is not None})
    try:
        cfg = TrainConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        _fail(f"invalid training config: {e}")
    from .checkpoint import CheckpointError
    from .training.loop import train as run

    try:
        folder = run(cfg, resume=resume, progress=progress, force=force)
    except CheckpointError as e:
        _fail(str(e))
    typer.echo(f"checkpoint: {folder}")


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint folder")],
    n: Annotated[int, typer.Option("--n", min=1, help="number of test images")] = 10_000,
    first_seed: Annotated[int | None, typer.Option(min=0, help="default: the test range")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the report here")
                         ] = None,
    update_metrics: Annotated[bool, typer.Option(
        "--update-metrics", help="write the report to CHECKPOINT/metrics.json (what the "
        "API serves; a shipped checkpoint's metrics.json is tracked by git)")] = False,
    split: Annotated[str, typer.Option(help="train | val | test")] = "test",
    batch_size: Annotated[int, typer.Option(min=1)] = 100,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Motif metrics (FPE, FNE, CE, E2EE in percent) and density on N test images."""
    from .analysis.evaluate import evaluate as run
    from .checkpoint import CheckpointError, atomic_write_text, load_checkpoint
    from .domains import digit_circle as dc

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
    try:
        ckpt = load_checkpoint(checkpoint)
    except CheckpointError as e:
        _fail(str(e))
    seed = dc.TEST_SEEDS_START if first_seed is None else first_seed
    report = run(ckpt.model, n=n, first_seed=seed, batch_size=batch_size, progress=progress)
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
def serve(
    checkpoints: Annotated[Path, typer.Option(help="folder of checkpoint folders")] = Path(
        "checkpoints"),
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
) -> None:
    """Start the REST backend (uvicorn backend.main:app) on the given checkpoints."""
    import os

    if not checkpoints.is_dir():
        _fail(f"checkpoints folder {checkpoints} does not exist")
    os.environ["SPARLING_CHECKPOINTS"] = str(checkpoints)
    try:
        import uvicorn
    except ImportError:
        _fail("the backend needs the serve extra: pip install -e '.[serve]'")
    uvicorn.run("backend.main:app", host=host, port=port)


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
