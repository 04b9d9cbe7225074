#!/usr/bin/env bash
# Create .venv and install the project with every extra (library, backend, frontend, dev).
# torch is pinned to 2.13.0, which pip takes from the CPU wheel on this kind of machine.
#   bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON_BOOTSTRAP:-python3}"
if ! [ -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[serve,app,dev]'
echo "installed into .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
