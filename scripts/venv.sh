# Sourced by run.sh and test.sh: find Python >= 3.11 and make .venv with it.
VENV="${WSGATE_VENV:-.venv}"

find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "wsgate needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    local python
    python=$(find_python)
    echo "creating the virtual environment $VENV with $python" >&2
    if ! "$python" -m venv "$VENV"; then
      echo "python -m venv failed; on Debian: apt-get install python3-venv" >&2
      return 1
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  fi
}
