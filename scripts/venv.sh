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

# Install Debian/Ubuntu packages with apt-get (as root, or through sudo).
apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "cannot install $*: this machine has no apt-get (the scripts set up Debian" \
         "and Ubuntu); install them by hand" >&2
    return 1
  fi
  echo "installing with apt-get: $*" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "$@" >/dev/null
}

# Stock Debian's python3 lacks venv (ensurepip); it comes in python3-venv, or in the
# versioned package for a Python that is not the system's default.
ensure_venv_module() {
  local python=$1
  "$python" -c 'import ensurepip, venv' >/dev/null 2>&1 && return 0
  local version
  version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  apt_install python3-venv || return 1
  "$python" -c 'import ensurepip, venv' >/dev/null 2>&1 ||
    apt_install "python${version}-venv"
}

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    local python
    python=$(find_python)
    ensure_venv_module "$python" || return 1
    echo "creating the virtual environment $VENV with $python" >&2
    rm -rf "$VENV"
    if ! "$python" -m venv "$VENV"; then
      echo "python -m venv failed (on Debian: apt-get install python3-venv)" >&2
      return 1
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  fi
}
