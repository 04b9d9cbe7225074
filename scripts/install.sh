#!/usr/bin/env bash
# Create .venv and install the project with every extra (library, backend, frontend, dev),
# at the exact versions of requirements/dev.txt (the lock; scripts/lock.py writes it).
#   bash scripts/install.sh                     # torch's CPU build (the default)
#   SPARLING_TORCH=cuda bash scripts/install.sh # torch's CUDA build from PyPI
# torch comes first, from PyTorch's CPU index, falling back within seconds to the configured
# index where that one cannot be reached (scripts/install_torch.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON_BOOTSTRAP:-python3}"
if ! [ -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
bash scripts/install_torch.sh .venv/bin/python
.venv/bin/python -m pip install -q -r requirements/dev.txt
.venv/bin/python -m pip install -q --no-deps -e '.[serve,app,dev]'
echo "installed into .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
