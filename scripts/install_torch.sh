#!/usr/bin/env bash
# Install torch (the version pinned in requirements/*.txt) into the Python given as $1.
#   SPARLING_TORCH=cpu (default): the CPU build from PyTorch's CPU index,
#       torch alone (--no-deps; its dependencies come from PyPI with the lock). If that
#       index cannot be reached (a machine that sees only PyPI), it fails within seconds
#       (--timeout 5 --retries 0) and torch comes from the configured index instead:
#       there, a pip configured with local CPU wheels still gets the CPU build.
#   SPARLING_TORCH=cuda: torch from PyPI, the CUDA build on Linux (gigabytes).
#   bash scripts/install_torch.sh .venv/bin/python
set -euo pipefail
PY="$1"
VERSION="$(sed -n 's/^torch==\([^ ;]*\).*/\1/p' "$(dirname "$0")/../requirements/backend.txt")"
CPU_INDEX="${SPARLING_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
case "${SPARLING_TORCH:-cpu}" in
    cpu)
        if "$PY" -m pip install -q --no-deps --timeout 5 --retries 0 \
                --index-url "$CPU_INDEX" "torch==$VERSION"; then
            exit 0
        fi
        echo "warning: PyTorch's CPU index ($CPU_INDEX) is unreachable here; installing" \
             "torch==$VERSION from the configured index (the CUDA build unless pip is set up" \
             "with CPU wheels)" >&2
        "$PY" -m pip install -q "torch==$VERSION"
        ;;
    cuda)
        "$PY" -m pip install -q "torch==$VERSION"
        ;;
    *)
        echo "error: SPARLING_TORCH must be cpu or cuda, got '${SPARLING_TORCH}'" >&2
        exit 2
        ;;
esac
