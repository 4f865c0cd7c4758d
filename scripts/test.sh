#!/usr/bin/env bash
# Quick start, command 2: install everything the tests need and run them all:
# ruff, mypy (strict) and pytest (with coverage), browser tests included. Arguments go
# to pytest.
#   ./scripts/test.sh
#   ./scripts/test.sh -k chat -x
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh

# System packages the tests drive for real, installed with apt-get when missing:
# Chromium for the browser tests (a CJK font so screenshots show every glyph), openssl
# for the TLS tests' self-signed certificate, redis-server and nginx for the many-node
# tests (each test starts its own on a free port, and stops it).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
fc-list 2>/dev/null | grep -qi "wenquanyi\|noto sans cjk" || missing+=(fonts-wqy-zenhei)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
fi

ensure_venv
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'

echo "== ruff" >&2
"$VENV/bin/ruff" check .
echo "== mypy (strict)" >&2
"$VENV/bin/mypy"
echo "== pytest (with branch coverage, subprocesses included)" >&2
rm -f .coverage .coverage.*
status=0
"$VENV/bin/pytest" --cov --cov-report=term:skip-covered "$@" || status=$?
echo "== coverage by package (lines and branches)" >&2
for package in gateway appserver store; do
  echo "  $package/: $("$VENV/bin/coverage" report --format=total --include="$package/*")%"
done
exit $status
