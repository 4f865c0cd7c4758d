#!/usr/bin/env bash
# Quick start, command 1: make a virtual environment, install wsgate, run the chat.
#   ./scripts/run.sh                  # then open http://127.0.0.1:8080/
#   ./scripts/run.sh --port 9000 --workers 4
# Every argument goes to `wsgate run` (see `wsgate run --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e .
exec "$VENV/bin/wsgate" run "$@"
