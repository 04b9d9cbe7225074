import json
import time

import numpy as np
import pytest
from helpers import make_tiny_checkpoint
from PIL import Image
from typer.testing import CliRunner

from sparling_core.cli import app
from sparling_core.domains import digit_circle as dc

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("cli") / "tiny", evaluate_n=0)


def test_sample_writes_png_and_json(tmp_path):
    result = runner.invoke(app, ["sample", "--seed", "12", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(tmp_path / "s" / "12.png"))
    expected = dc.sample(12)
    assert image.shape == (100, 100) and set(np.unique(image)) <= {0, 255}
    assert np.array_equal(image == 255, expected.image == 1)
    data = json.loads((tmp_path / "s" / "12.json").read_text())
    assert data["domain"] == "digit-circle"
    assert data["label"] == [str(d) for d in expected.label]
    assert data["motifs"][0] == {"symbol": str(expected.motifs[0].digit),
                                 "center": list(expected.motifs[0].center),
                                 "box": list(expected.motifs[0].box)}


def test_evaluate_json_contract(checkpoint, tmp_path):
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["evaluate", str(checkpoint), "--n", "7", "--first-seed", "5",
                                 "--json", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    for key in ("fpe", "fne", "ce", "e2ee", "density", "density_ratio", "n", "confusion",
                "channel_to_digit"):
        assert key in report
    assert report["n"] == 7 and report["first_seed"] == 5
    assert not (checkpoint / "metrics.json").exists()  # --json leaves the checkpoint alone
    result = runner.invoke(app, ["evaluate", str(checkpoint), "--n", "3", "--no-progress"])
    assert result.exit_code == 2 and "--update-metrics" in result.output  # never implicit
    assert not (checkpoint / "metrics.json").exists()
    result = runner.invoke(app, ["evaluate", str(checkpoint), "--n", "3", "--no-progress",
                                 "--update-metrics"])
    assert result.exit_code == 0
    assert json.loads((checkpoint / "metrics.json").read_text())["n"] == 3
    assert str(checkpoint / "metrics.json") in result.output  # says where it wrote


def test_evaluate_threads_sets_torchs_threads_and_keeps_the_report(checkpoint, tmp_path,
                                                                   monkeypatch):
    import torch

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)  # keep this process's own
    reports = []
    for extra in ([], ["--threads", "1"]):
        out = tmp_path / f"report{len(reports)}.json"
        result = runner.invoke(app, ["evaluate", str(checkpoint), "--n", "4", "--json",
                                     str(out), "--no-progress", *extra])
        assert result.exit_code == 0, result.output
        reports.append(json.loads(out.read_text()))
    assert calls == [1]  # only when asked
    assert reports[0]["e2ee"] == reports[1]["e2ee"] and reports[0]["n"] == 4
    result = runner.invoke(app, ["evaluate", str(checkpoint), "--threads", "0",
                                 "--json", str(tmp_path / "x.json")])
    assert result.exit_code == 2 and "Invalid value" in result.output
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("args, message", [
    (["evaluate", "/no/such/folder"], "does not exist"),
    (["evaluate", "{ckpt}", "--n", "0"], "Invalid value"),
    (["sample", "--seed", "-3", "--out", "{tmp}"], "Invalid value"),
    (["train", "--config", "/no/such.json"], "does not exist"),
    (["train", "--config", "{badjson}"], "not valid JSON"),
    (["train", "--config", "{badkey}"], "unknown training config keys"),
    (["train", "--sparsity", "dropout", "--max-samples", "4"], "sparsity must be one of"),
])
def test_bad_arguments_fail_clearly(args, message, checkpoint, tmp_path):
    (tmp_path / "bad.json").write_text("{oops")
    (tmp_path / "key.json").write_text(json.dumps({"learning_rate": 1}))
    args = [a.format(ckpt=checkpoint, tmp=tmp_path, badjson=tmp_path / "bad.json",
                     badkey=tmp_path / "key.json") for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert message in result.output


@pytest.mark.parametrize("config_model, tied", [(None, True), ({"motif_width": 8}, False)])
def test_train_default_model_is_the_shipped_architecture(tmp_path, config_model, tied):
    """Without a config the small model is the shipped, phase-tied one; a config's own model
    section is taken as written (phase_tied defaults to False, as in older configs)."""
    args = ["train", "--out", str(tmp_path / "t"), "--max-samples", "2", "--val-every", "2",
            "--val-size", "2", "--batch-size", "2", "--threads", "1", "--no-progress"]
    if config_model is not None:
        (tmp_path / "c.json").write_text(json.dumps({"model": config_model}))
        args += ["--config", str(tmp_path / "c.json")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model = json.loads((tmp_path / "t" / "config.json").read_text())["model"]
    assert model["phase_tied"] is tied
    assert model["motif_width"] == (32 if tied else 8)


def test_train_tiny_from_flags(tmp_path):
    result = runner.invoke(app, ["train", "--model-size", "tiny", "--out", str(tmp_path / "t"),
                                 "--max-samples", "8", "--val-every", "4", "--val-size", "4",
                                 "--batch-size", "4", "--seed", "3", "--threads", "1",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert config["samples_seen"] == 8 and config["model"]["motif_width"] == 8
    assert config["train"]["seed"] == 3 and config["train"]["threads"] == 1


def test_serve_refuses_a_missing_folder(tmp_path):
    result = runner.invoke(app, ["serve", "--checkpoints", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


@pytest.mark.parametrize("given, expected", [(None, "30000"), ("77", "77")])
def test_serve_runs_the_backend_in_a_fresh_process_with_the_servers_spin(
        checkpoint, tmp_path, given, expected):
    """`sparling serve` has loaded torch (and libgomp) already, so it execs uvicorn: the
    server, under the CLI's own pid, answers and starts with GOMP_SPINCOUNT set."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import httpx

    from backend.process import free_port, stop_server

    folder = tmp_path / "checkpoints"
    shutil.copytree(checkpoint, folder / "tiny")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    env["SPARLING_API_KEY"] = ""
    if given is not None:
        env["GOMP_SPINCOUNT"] = given
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "sparling_core.cli", "serve", "--checkpoints",
                             str(folder), "--port", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])
    try:
        for _ in range(300):
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()
        assert [m["id"] for m in models["models"]] == ["tiny"]
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        assert f"GOMP_SPINCOUNT={expected}".encode() in environ
    finally:
        stop_server(proc)
        log.close()
