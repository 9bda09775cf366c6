#!/usr/bin/env bash
# Sets up recon (scripts/setup.sh) and runs the quick start: `recon doctor`, then `recon demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
RECON_SKIP_BROWSER=${RECON_SKIP_BROWSER:-1} bash scripts/setup.sh
VENV=${RECON_VENV:-.venv}
"$VENV/bin/recon" doctor
"$VENV/bin/recon" demo "$@"
