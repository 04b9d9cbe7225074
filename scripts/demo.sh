#!/usr/bin/env bash
# Run the Sparling Motif Explorer locally, without Docker: the FastAPI backend on
# 127.0.0.1:8000 and the Streamlit app on 127.0.0.1:8501. Ctrl-C stops both.
#
#   scripts/demo.sh
#   PYTHON=/path/to/python SPARLING_CHECKPOINTS=runs/main scripts/demo.sh
#
# Assumes the virtual environment at .venv exists (or PYTHON points at one) with the
# package installed with its `serve` and `app` extras.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
export SPARLING_CHECKPOINTS="${SPARLING_CHECKPOINTS:-checkpoints}"
API_PORT="${API_PORT:-8000}"
APP_PORT="${APP_PORT:-8501}"
export SPARLING_API_URL="http://127.0.0.1:${API_PORT}"

if ! [ -x "$PYTHON" ] && ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "error: no Python at '$PYTHON'. Create the virtual environment first, or set PYTHON." >&2
    exit 1
fi
if ! [ -d "$SPARLING_CHECKPOINTS" ]; then
    echo "warning: checkpoint folder '$SPARLING_CHECKPOINTS' does not exist; the backend will" \
         "start with no models (train one with 'sparling train', or set SPARLING_CHECKPOINTS)." >&2
fi

# port_free PORT: true when nothing listens on 127.0.0.1:PORT (we could bind it).
port_free() {
    "$PYTHON" -c "import socket, sys
s = socket.socket()
try:
    s.bind(('127.0.0.1', int(sys.argv[1])))
except OSError:
    sys.exit(1)" "$1"
}
for port in "$API_PORT" "$APP_PORT"; do
    if ! port_free "$port"; then
        echo "error: port $port on 127.0.0.1 is already in use (another server?); stop it," \
             "or pick other ports with API_PORT / APP_PORT." >&2
        exit 1
    fi
done
# A token for this run: the backend sends it back (X-Sparling-Instance), so a server that
# is not ours cannot be taken for it.
export SPARLING_INSTANCE_ID="demo-$$-$RANDOM$RANDOM"

pids=()
cleanup() {
    trap - INT TERM EXIT
    echo
    echo "stopping..."
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup INT TERM EXIT

# wait_for URL SECONDS PID [TOKEN]: poll URL until it answers 200 (with X-Sparling-Instance
# TOKEN when given), as long as PID lives; then check that PID still lives.
wait_for() {
    local url="$1" seconds="$2" pid="$3" token="${4:-}"
    for _ in $(seq "$seconds"); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "error: the process serving $url exited; see its output above." >&2
            return 1
        fi
        if "$PYTHON" -c "import sys, urllib.request
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=2)
    ours = not sys.argv[2] or r.headers.get('X-Sparling-Instance') == sys.argv[2]
    sys.exit(r.status != 200 or not ours)
except Exception:
    sys.exit(1)" "$url" "$token"; then
            sleep 0.5
            if ! kill -0 "$pid" 2>/dev/null; then
                echo "error: $url answered, but the process started for it exited (another" \
                     "server holds the port?); see its output above." >&2
                return 1
            fi
            return 0
        fi
        sleep 1
    done
    echo "error: $url did not answer within ${seconds}s." >&2
    return 1
}

echo "starting the backend on $SPARLING_API_URL (checkpoints: $SPARLING_CHECKPOINTS)"
"$PYTHON" -m uvicorn backend.main:app --host 127.0.0.1 --port "$API_PORT" &
pids+=($!)
wait_for "$SPARLING_API_URL/v1/health" 180 "${pids[0]}" "$SPARLING_INSTANCE_ID"
"$PYTHON" -c "import json, sys, urllib.request, urllib.error
try:
    body = json.load(urllib.request.urlopen(sys.argv[1] + '/v1/ready', timeout=10))
    print('backend ready; models:', ', '.join(body.get('models', [])) or 'none')
except urllib.error.HTTPError as e:
    print('backend up but not ready:', e.read().decode(errors='replace'))" "$SPARLING_API_URL"

echo "starting the app on http://127.0.0.1:${APP_PORT}"
"$PYTHON" -m streamlit run frontend/streamlit_app.py --server.address 127.0.0.1 \
    --server.port "$APP_PORT" --server.headless true --browser.gatherUsageStats false \
    --client.toolbarMode minimal &
pids+=($!)
wait_for "http://127.0.0.1:${APP_PORT}/_stcore/health" 120 "${pids[1]}"

echo
echo "  Sparling Motif Explorer: http://127.0.0.1:${APP_PORT}"
echo "  API: $SPARLING_API_URL/docs      (Ctrl-C stops both)"
echo
# Return as soon as either server exits; the trap stops the other.
wait -n "${pids[@]}"
