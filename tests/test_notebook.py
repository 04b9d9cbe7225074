"""examples/quickstart.ipynb runs top to bottom (nbclient, a fresh kernel); its figures are
saved as PNG test artifacts under test-artifacts/notebook/ (git-ignored; CI keeps them),
with the executed notebook.

    .venv/bin/python -m pytest tests/test_notebook.py
"""

from __future__ import annotations

import base64
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"
ARTIFACTS = ROOT / "test-artifacts" / "notebook"
BUDGET_S = 120  # it takes well under a minute; the timeout is per cell, this for the whole


def _save_artifacts(nb) -> list[Path]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    nbformat.write(nb, ARTIFACTS / NOTEBOOK.name)
    saved = []
    for i, cell in enumerate(nb.cells):
        for j, output in enumerate(cell.get("outputs", [])):
            png = output.get("data", {}).get("image/png")
            if png:
                path = ARTIFACTS / f"{NOTEBOOK.stem}-cell{i:02d}-{j}.png"
                path.write_bytes(base64.b64decode(png))
                saved.append(path)
    return saved


def test_quickstart_notebook_runs(monkeypatch):
    # the kernel and the service it starts inherit this: one thread each, as the other
    # server tests run, so that they do not fight over a shared machine's cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the kernel must be this interpreter (the one with this checkout's packages)
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = nbclient.NotebookClient(
        nb, timeout=BUDGET_S, kernel_name="python3", allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    start = time.monotonic()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        _save_artifacts(nb)
        pytest.fail(f"a notebook cell failed (executed copy in {ARTIFACTS}):\n{e}")
    finally:
        elapsed = time.monotonic() - start
    figures = _save_artifacts(nb)
    print(f"notebook ran in {elapsed:.1f} s; figures: {[p.name for p in figures]}")
    kernel_python = nb.cells[0].outputs[0]["text"].strip()
    assert Path(kernel_python).resolve() == Path(sys.executable).resolve()
    assert len(figures) == 2, "the notebook draws the alignment and the intervention"
    text = "\n".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "label: 0 4 1 6 3 8" in text and "after:  0 4 1 3 8" in text
    assert "service stopped" in text
    assert elapsed < BUDGET_S
