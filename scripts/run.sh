#!/usr/bin/env bash
# Set up (once) and run the main job: DNArch on MNIST-1D at the default budget, ending in a learned
# architecture, a test accuracy and an exported network in runs/. Extra arguments go to `dnarch train`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh" ""
echo "[dnarch] running: dnarch train --data mnist1d $*"
dnarch train --data mnist1d "$@"
