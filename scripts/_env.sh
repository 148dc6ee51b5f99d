# Shared set-up for scripts/run.sh and scripts/test.sh: a local virtual environment with dnarch
# installed from this checkout. Idempotent: reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${DNARCH_VENV:-.venv}"
EXTRAS="${1:-}"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "[dnarch] error: needs Python >= 3.11 (found: $("$PY" --version 2>&1)); set PYTHON=..." >&2
  exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "[dnarch] creating a virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.dnarch-install-$(cat pyproject.toml | sha256sum | cut -c1-16)${EXTRAS:+-$EXTRAS}"
if [ ! -f "$stamp" ]; then
  echo "[dnarch] installing dnarch${EXTRAS:+[$EXTRAS]} and its dependencies into $VENV (torch==2.13.0; the first time takes a few minutes)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".${EXTRAS:+[$EXTRAS]}"
  touch "$stamp"
else
  echo "[dnarch] $VENV is up to date (delete $stamp to reinstall)"
fi
export PATH="$PWD/$VENV/bin:$PATH"
