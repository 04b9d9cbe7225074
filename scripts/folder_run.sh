#!/usr/bin/env bash
# Issue 14's real run, end to end: export DigitCircle as data folders, train the shipped
# recipe (configs/digit-circle-mt.json) from the folder, evaluate on exported test images.
#
#   scripts/folder_run.sh [DATA_DIR] [RUN_DIR]      (defaults: data/dc-folder, runs/mt-folder)
#   N_TRAIN=100000 N_VAL=500 N_TEST=10000 THREADS=2 MAX_MINUTES=140 scripts/folder_run.sh
#   CONFIG=configs/digit-circle-mt-trunk-unselective.json scripts/folder_run.sh   (another recipe)
#
# DATA_DIR/train holds N_TRAIN training images (DigitCircle's train seeds from 0) and N_VAL
# validation images (its val seeds), every line marked with its split; DATA_DIR/test holds
# N_TEST test images (its test seeds), marked "test". Exports that already exist are kept,
# so after a kill the same command continues the training (--resume) where it stopped.
# About 3 minutes of exports (650 images/s, 440 MB for 100,000 images), then the training
# (about 2 hours on 2 cores), then a 10,000-image evaluation written to RUN_DIR/eval-folder.json.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA="${1:-data/dc-folder}"
RUN="${2:-runs/mt-folder}"
SPARLING="${SPARLING:-.venv/bin/sparling}"
N_TRAIN="${N_TRAIN:-100000}"
N_VAL="${N_VAL:-500}"
N_TEST="${N_TEST:-10000}"
THREADS="${THREADS:-2}"
MAX_MINUTES="${MAX_MINUTES:-140}"
CONFIG="${CONFIG:-configs/digit-circle-mt.json}"

if ! [ -x "$SPARLING" ] && ! command -v "$SPARLING" >/dev/null 2>&1; then
    echo "error: no sparling command at '$SPARLING'; install first (README) or set SPARLING" >&2
    exit 1
fi
mkdir -p "$DATA"

if ! [ -f "$DATA/train/labels.jsonl" ]; then
    # train and val exported apart, then joined in a temporary folder renamed into place
    tmp="$DATA/.train-building"
    rm -rf "$tmp" "$DATA/.val-building"
    "$SPARLING" export --domain digit-circle --split train --mark-split --n "$N_TRAIN" \
        --no-progress --out "$tmp"
    "$SPARLING" export --domain digit-circle --split val --mark-split --n "$N_VAL" \
        --no-progress --out "$DATA/.val-building"
    mv "$DATA/.val-building/images/"* "$tmp/images/"
    cat "$DATA/.val-building/labels.jsonl" >> "$tmp/labels.jsonl"
    rm -rf "$DATA/.val-building"
    mv "$tmp" "$DATA/train"
fi
if ! [ -f "$DATA/test/labels.jsonl" ]; then
    "$SPARLING" export --domain digit-circle --split test --mark-split --n "$N_TEST" \
        --no-progress --out "$DATA/test"
fi

"$SPARLING" train --config "$CONFIG" --data "$DATA/train" --out "$RUN" \
    --resume --threads "$THREADS" --max-minutes "$MAX_MINUTES" --no-progress
"$SPARLING" evaluate "$RUN" --data "$DATA/test" --split test --json "$RUN/eval-folder.json"
