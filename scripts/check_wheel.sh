#!/usr/bin/env bash
# Build the sdist and the wheel (python -m build: the wheel is built from the sdist, in an
# isolated environment), install the wheel with its serve and client extras into a fresh
# virtual environment (no system site-packages; torch 2.13.0 first, as scripts/install.sh
# does), and check that the installed package works from outside the checkout: the three
# packages import, the domain's package data is there, the app builds, the client needs
# no torch, and `sparling --help` runs. Everything happens in a temporary folder.
#   bash scripts/check_wheel.sh            (uses .venv/bin/python to build; PYTHON=... to change)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
PY="${PYTHON:-.venv/bin/python}"
BOOTSTRAP="${PYTHON_BOOTSTRAP:-python3}"
start=$(date +%s)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sparling-wheel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
unset PYTHONPATH  # import only what was installed

step() { echo "[$(( $(date +%s) - start )) s] $*"; }
quietly() {  # run "$@" with its output in a log, shown only when it fails
    "$@" > "$tmp/log" 2>&1 || { cat "$tmp/log"; echo "failed: $*" >&2; exit 1; }
}

step "build sdist and wheel"
quietly "$PY" -m build --outdir "$tmp/dist" "$REPO"
ls "$tmp/dist"
wheel=$(ls "$tmp/dist"/*.whl)
sdist=$(ls "$tmp/dist"/*.tar.gz)

step "check the wheel's contents"
"$PY" - "$wheel" "$sdist" <<'PY'
import sys, tarfile, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
tops = sorted({n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")})
assert tops == ["backend", "frontend", "sparling_client", "sparling_core"], tops
assert "sparling_core/domains/digit_stamps.json" in names, "package data missing"
assert "sparling_client/client.py" in names
sdist = tarfile.open(sys.argv[2]).getnames()
assert any(n.endswith("/sparling_client/__init__.py") for n in sdist), "sdist lacks the client"
print(f"wheel: {len(names)} files in {tops}; sdist: {len(sdist)} entries")
PY

step "fresh virtual environment"
quietly "$BOOTSTRAP" -m venv "$tmp/venv"
venv_py="$tmp/venv/bin/python"
grep -q "include-system-site-packages = false" "$tmp/venv/pyvenv.cfg"
quietly "$venv_py" -m pip install torch==2.13.0
step "install the wheel with [serve,client]"
quietly "$venv_py" -m pip install "${wheel}[serve,client]"

step "use it from outside the checkout"
cd "$tmp"
"$venv_py" - <<'PY'
import sys
import sparling_client  # first: it must not pull in torch
assert "torch" not in sys.modules, "sparling_client imported torch"
import backend.main
import sparling_core
from sparling_core import get_domain, run, SparlingModel, digit_circle_tiny
for module in (sparling_core, sparling_client, backend):
    assert "site-packages" in module.__file__, module.__file__
sample = get_domain("digit-circle").sample(7)  # reads the package data
model = SparlingModel(digit_circle_tiny()).eval()
result = run(model, sample.image)
backend.main.create_app()
client = sparling_client.Client("http://127.0.0.1:9")
print("imports, a sample, a run and the app: ok;", len(result.tokens), "tokens from an untrained model")
PY
"$tmp/venv/bin/sparling" --help > /dev/null
"$tmp/venv/bin/sparling" sample --seed 7 --out "$tmp/samples" > /dev/null
test -s "$tmp/samples/7.png"
step "wheel check passed (the temporary folder is removed next)"
