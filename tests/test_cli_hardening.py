"""Issue 16, items 8-10: the trainer's checkpoint generations, resume checks and the CLI's
edges: one line and exit 2, never a traceback."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from helpers import make_tiny_checkpoint  # noqa: E402

from sparling_core import checkpoint as ck  # noqa: E402
from sparling_core.cli import app  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
runner = CliRunner()
TINY = ["--model-size", "tiny", "--val-every", "4", "--val-size", "4", "--batch-size", "4",
        "--threads", "1", "--no-progress", "--quiet"]


def train(out, *extra: str):
    return runner.invoke(app, ["train", "--out", str(out), "--max-samples", "8", *TINY, *extra])


def one_line_error(result, words: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert words in lines[0], lines[0]


# --- 8. one generation per save; no overwriting without --force -----------------------------

def test_a_save_is_one_generation_and_leaves_no_temporaries(tmp_path):
    out = tmp_path / "run"
    assert train(out).exit_code == 0
    state = ck.load_train_state(out)
    meta = json.loads((out / "config.json").read_text())
    history = ck.read_history(out)
    assert state["samples_seen"] == meta["samples_seen"] == history[-1]["samples"] == 8
    assert state["config"]["train"]["batch_size"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no .run.tmp-* / .old-*
    assert not list(out.glob(".*"))


def test_a_kill_inside_a_save_leaves_the_previous_generation(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert train(out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_rename, calls = os.rename, []

    def killed(src, dst):  # the process dies after NAME -> .NAME.old-*
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(ck.os, "rename", killed)
    model = ck.load_checkpoint(out).model
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(out, model, samples_seen=99, train_state={"samples_seen": 99})
    monkeypatch.setattr(ck.os, "rename", real_rename)
    assert not out.exists()  # mid-swap: only the old generation is left, under its .old name
    ck.recover(out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_stale_temporaries_are_cleaned(tmp_path):
    out = tmp_path / "run"
    assert train(out).exit_code == 0
    (out / ".model.safetensors.abc.tmp").write_bytes(b"half")  # the old per-file scheme
    (tmp_path / ".run.tmp-xyz").mkdir()
    assert train(out, "--resume", "--max-samples", "12").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert not list(out.glob(".*"))


def test_a_fresh_run_refuses_an_existing_checkpoint_without_force(tmp_path):
    out = tmp_path / "run"
    assert train(out).exit_code == 0
    (out / "metrics.json").write_text("{}")
    one_line_error(train(out), "--force")
    assert train(out, "--force", "--max-samples", "4").exit_code == 0
    assert json.loads((out / "config.json").read_text())["samples_seen"] == 4
    assert not (out / "metrics.json").exists()  # nothing of the replaced run is kept


def test_sigterm_saves_every_trained_sample_and_resumes(tmp_path):
    """A SIGTERM mid-run is a graceful stop: exit 0, a checkpoint with every step trained
    (not only up to the last validation), and --resume goes on from there."""
    import signal
    import time

    out = tmp_path / "run"
    args = [sys.executable, "-m", "sparling_core.cli", "train", "--out", str(out),
            "--max-samples", "1000000", *TINY[:-1]]  # logging on: the stop reason
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "config.json").exists():  # the first validation's save
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.05)
        time.sleep(0.5)  # a few more steps
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "SIGTERM received" in output, output
    state = ck.load_train_state(out)
    meta = json.loads((out / "config.json").read_text())
    assert state["samples_seen"] == meta["samples_seen"] >= 4
    assert state["samples_seen"] % 4 == 0 and state["samples_seen"] < 1000000
    assert state["complete"] is False  # cut short: a script must not evaluate it as done
    more = state["samples_seen"] + 4
    result = runner.invoke(app, ["train", "--out", str(out), "--max-samples", str(more),
                                 "--resume", *TINY])
    assert result.exit_code == 0, result.output
    assert ck.load_train_state(out)["samples_seen"] == more
    assert ck.load_train_state(out)["complete"] is True  # its budget reached


def test_a_second_signal_is_not_caught_and_handlers_are_restored():
    import signal

    from sparling_core.training.stop import StopRequest

    # Python's own SIGINT handler as "the one before" (an earlier test in the same process
    # may have left another one installed)
    original = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _second_signal_and_restored_handlers(StopRequest)
    finally:
        signal.signal(signal.SIGINT, original)


def _second_signal_and_restored_handlers(StopRequest) -> None:
    import os
    import signal

    before = signal.getsignal(signal.SIGINT)
    assert before is signal.default_int_handler
    with StopRequest() as stop:
        assert stop.requested is None
        os.kill(os.getpid(), signal.SIGINT)  # the first: only asks
        assert stop.requested == "SIGINT"
        with pytest.raises(KeyboardInterrupt):  # the second acts as without the handler
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
    with StopRequest() as stop:  # an exception inside still restores them
        with pytest.raises(ValueError):
            with StopRequest():
                raise ValueError
    assert signal.getsignal(signal.SIGINT) is before


# --- 9. resuming with another configuration ---------------------------------------------------

@pytest.mark.parametrize("change, words", [
    (["--model-size", "small"], "motif_width 8 -> 32"),
    (["--batch-size", "2"], "batch_size: saved 4, now 2"),
])
def test_resume_with_another_configuration_is_one_line(tmp_path, change, words):
    out = tmp_path / "run"
    assert train(out).exit_code == 0
    result = runner.invoke(app, ["train", "--out", str(out), "--max-samples", "12", *TINY,
                                 *change, "--resume"])
    one_line_error(result, words)


# --- 10. the CLI's edges ----------------------------------------------------------------------

@pytest.mark.parametrize("content, words", [
    (b'{"model": 5}', '"model" must be a JSON object'),
    (b'{"model": {"motif_width": 8.5}}', "motif_width must be an integer"),
    (b'{"batch_size": 2.5, "model": {}}', "invalid training config"),
    (b'\xff\xfe{"model": {}}', "not UTF-8"),
    (b"[" * 100_000, "not valid JSON"),
])
def test_bad_config_files_are_one_line(tmp_path, content, words):
    (tmp_path / "c.json").write_bytes(content)
    one_line_error(runner.invoke(app, ["train", "--config", str(tmp_path / "c.json"),
                                       "--out", str(tmp_path / "o")]), words)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("cli-h") / "tiny", evaluate_n=0)


def test_evaluate_json_into_a_missing_folder_fails_before_evaluating(tiny, tmp_path,
                                                                      monkeypatch):
    import sparling_core.analysis.evaluate as ev

    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: pytest.fail("evaluated first"))
    result = runner.invoke(app, ["evaluate", str(tiny), "--json",
                                 str(tmp_path / "missing_dir" / "x.json")])
    one_line_error(result, "missing_dir")
    assert not (tmp_path / "missing_dir").exists()


def test_evaluate_never_rewrites_metrics_implicitly(tiny):
    one_line_error(runner.invoke(app, ["evaluate", str(tiny), "--n", "2"]), "--update-metrics")
    assert not (tiny / "metrics.json").exists()


@pytest.mark.parametrize("device, words", [
    ("tpu", "--device must be cpu or cuda"),
    pytest.param("cuda", "torch sees no CUDA device", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_evaluate_device_is_checked_before_loading(tiny, tmp_path, device, words):
    result = runner.invoke(app, ["evaluate", str(tiny), "--n", "2", "--device", device,
                                 "--json", str(tmp_path / "r.json")])
    one_line_error(result, words)
    assert not (tmp_path / "r.json").exists()


def test_evaluate_on_the_cpu_device_writes_the_report(tiny, tmp_path):
    result = runner.invoke(app, ["evaluate", str(tiny), "--n", "3", "--device", "cpu",
                                 "--no-progress", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r.json").read_text())["n"] == 3


@pytest.mark.parametrize("seed, ok", [(2**32 - 1, True), (2**32, False), (-1, False)])
def test_sample_seeds_are_the_apis(tmp_path, seed, ok):
    result = runner.invoke(app, ["sample", "--seed", str(seed), "--out", str(tmp_path)])
    assert (result.exit_code == 0) is ok, result.output
    if not ok:
        assert result.exit_code == 2 and "Invalid value" in result.output


def test_verbose_can_be_turned_off(tmp_path):
    cmd = [sys.executable, "-m", "sparling_core.cli", "train", "--out", str(tmp_path / "q"),
           "--max-samples", "4", *TINY]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    quiet = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "validation" not in quiet.stderr and "INFO" not in quiet.stderr
    loud = subprocess.run([c for c in cmd if c != "--quiet"] + ["--verbose", "--force"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert loud.returncode == 0 and "INFO" in loud.stderr
