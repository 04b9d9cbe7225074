#!/usr/bin/env bash
# Install everything, then lint and run the whole test suite (end-to-end browser tests
# included; slow training tests only with --runslow). Extra arguments go to pytest.
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if ! bash scripts/install_chromium.sh; then
    if [ "${CI:-}" = "true" ]; then
        echo "error: chromium could not be installed; the e2e tests need it" >&2
        exit 1
    fi
    echo "warning: chromium could not be installed; the e2e tests will be skipped" >&2
fi
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
# The wheel and the sdist build, and the wheel installs into a clean virtual environment
# with its extras (about 3 minutes; SPARLING_SKIP_WHEEL_CHECK=1 skips it on a dev machine).
if [ -z "${SPARLING_SKIP_WHEEL_CHECK:-}" ]; then
    bash scripts/check_wheel.sh
fi
