#!/usr/bin/env bash
# Set up (once) and run the checks: ruff (lint + format), mypy and the pytest suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh" "dev"
echo "[dnarch] ruff check"
ruff check dnarch tests benchmarks
echo "[dnarch] ruff format --check"
ruff format --check dnarch tests benchmarks
echo "[dnarch] mypy dnarch"
mypy dnarch
echo "[dnarch] pytest"
python -m pytest "$@"
