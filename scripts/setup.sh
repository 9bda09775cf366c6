#!/usr/bin/env bash
# Idempotent set-up of a recon development environment in ./.venv (or $RECON_VENV).
#   - installs the Debian packages recon needs when they are missing (libusb for Open3D; chromium for the
#     browser tests unless RECON_SKIP_BROWSER=1)
#   - creates the virtual environment
#   - installs PyTorch: the CPU build where no CUDA GPU is visible (never the multi-GB CUDA wheels there),
#     the default CUDA build where nvidia-smi sees a GPU; RECON_TORCH overrides the requirement
#   - installs recon in editable mode with the dev extras
# Re-running it does only what is still missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RECON_VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_VERSION=${RECON_TORCH_VERSION:-2.13.0}
log() { printf '[setup] %s\n' "$*" >&2; }

# --- Debian packages ----------------------------------------------------------------------------------------
need_apt=()
if command -v dpkg >/dev/null 2>&1; then
  dpkg -s libusb-1.0-0 >/dev/null 2>&1 || need_apt+=(libusb-1.0-0)
  dpkg -s libgomp1 >/dev/null 2>&1 || need_apt+=(libgomp1)
  if [ "${RECON_SKIP_BROWSER:-0}" != "1" ]; then
    [ -x /usr/bin/chromium ] || need_apt+=(chromium)
  fi
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = "0" ] || SUDO="sudo"
  log "installing Debian packages: ${need_apt[*]}"
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"; } >&2; then
    log "WARNING: could not install ${need_apt[*]} (Open3D needs libusb-1.0-0; browser tests need chromium)"
  fi
fi

# --- virtual environment ------------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade "pip>=23" >&2 || true

# --- PyTorch ------------------------------------------------------------------------------------------------
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  if [ -n "${RECON_TORCH:-}" ]; then
    log "installing torch: $RECON_TORCH"
    "$VPY" -m pip install -q "$RECON_TORCH" >&2
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    log "CUDA GPU found: installing the default (CUDA) torch build"
    "$VPY" -m pip install -q torch >&2
  else
    log "no CUDA GPU: installing the CPU build of torch $TORCH_VERSION"
    # A CPU wheel from pip's configured find-links when there is one (pip prefers 2.13.0+cpu over the CUDA
    # build of the same version), else the PyTorch CPU-only index: never multi-GB CUDA wheels without a GPU.
    if "$VPY" -m pip download -q --no-index --no-deps "torch==$TORCH_VERSION" -d "$VENV/.torch-probe" >/dev/null 2>&1 \
        && ls "$VENV"/.torch-probe/torch-*+cpu-*.whl >/dev/null 2>&1; then
      "$VPY" -m pip install -q "torch==$TORCH_VERSION" >&2
    else
      "$VPY" -m pip install -q --timeout 20 "torch==$TORCH_VERSION" \
        --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple >&2
    fi
    rm -rf "$VENV/.torch-probe"
  fi
fi

# --- recon --------------------------------------------------------------------------------------------------
stamp="$VENV/.recon-install-stamp"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] || [ ! -x "$VENV/bin/recon" ]; then
  log "installing recon (editable) with dev extras"
  # Constrain torch to the installed build so no resolver step swaps it for a CUDA wheel.
  tv=$("$VPY" -c "import torch; print(torch.__version__)")
  echo "torch==$tv" > "$VENV/torch-constraint.txt"
  "$VPY" -m pip install -q -c "$VENV/torch-constraint.txt" -e ".[dev]" >&2
  touch "$stamp"
fi
# --- three.js for the GLB browser tests (npm registry; skipped with a reason by those tests when absent) -------
if command -v npm >/dev/null 2>&1 && [ -f tests/export/threejs/package-lock.json ]; then
  if [ ! -d tests/export/threejs/node_modules ] || [ tests/export/threejs/package-lock.json -nt tests/export/threejs/node_modules ]; then
    log "installing three.js for the GLB browser tests (npm ci)"
    npm ci --prefix tests/export/threejs --no-audit --no-fund >&2 \
      && touch tests/export/threejs/node_modules \
      || log "WARNING: npm ci in tests/export/threejs failed; the GLB browser tests will skip"
  fi
fi
log "ready: $VENV ($("$VPY" -c "import torch; print('torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu')"))"
