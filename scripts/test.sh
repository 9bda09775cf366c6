#!/usr/bin/env bash
# Sets up recon (scripts/setup.sh) and runs the whole test suite (lint, then pytest; the import contracts are tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${RECON_VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
echo "== ruff"
ruff check . && ruff format --check .
# Import contracts ([tool.importlinter] in pyproject.toml) are checked by tests/test_imports.py: lint-imports'
# graph builder only scans recon/, not the folders mapped into it by package-dir.
echo "== pytest"
# Two workers on our 2-core machines; warp kernels are compiled once into a shared cache.
python -m pytest -n "${RECON_TEST_WORKERS:-2}" --dist loadfile --durations=15 "$@"
