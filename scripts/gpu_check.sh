#!/usr/bin/env bash
# The prepared GPU check: on a machine with a CUDA GPU, in under 8 minutes,
#   1. the Warp-vs-reference parity tests of every renderer op on CUDA (the `device` fixture's cuda cases of
#      tests/renderers: forward and backward, every op family),
#   2. benchmarks/bench_splat.py, bench_volume.py and bench_raster.py (when present) with --device cuda --json,
#   3. with RECON_CHAIR=<a copy of nerf_synthetic_chair_200> (issue 10, item 4): the published (full-size) presets
#      of triangles and nerf trained on it for RECON_TRAIN_MINUTES (default 2) each on CUDA, with a periodic
#      evaluation every quarter minute on 20 test views: the time-to-PSNR curve (training minutes, PSNR); the
#      budget's rules apply as on any run (capacity.json: the triangle cap, nerf's rays per step, and nerf's finest
#      hash-grid level from the 200 px views' footprint, 1 024 instead of the 800 px recipe's 4 096),
# then one table (test counts per op family, benchmark timings, time-to-PSNR) on stdout and, with $OUT set, files
# under $OUT. Record what it prints in benchmarks/README.md ("GPU check").
#
# Usage:
#   bash scripts/gpu_check.sh                 # run the check (needs recon's dependencies importable)
#   bash scripts/gpu_check.sh --prepare       # HERE (with network): download the wheels the lent GPU machines
#                                             # lack into .whl/ and print how to carry them (see below)
#
# The lent GPU machines (the `device` tool) have python3 3.12 with torch, pytest, jaxtyping and numpy, but not
# warp-lang, trimesh or nerfacc, and no network. --prepare downloads those wheels for Python 3.12 into .whl/ and
# splits any wheel over 60 MiB into parts (the tool carries at most 64 MiB per call): carry .whl/part-N in one call
# each (`cp .whl/* /tmp/recon-whl/`), then run this script with RECON_WHEELS=/tmp/recon-whl, which reassembles and
# installs them into /tmp/recon-site. Without an installed recon, the script maps the package-dir layout
# (renderers/ -> recon.renderers, ...) with symlinks in this throwaway copy and puts the checkout on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
PART_BYTES=$((60 * 1024 * 1024))
WHEELS="warp-lang==1.19.0 trimesh nerfacc==0.5.3 safetensors tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1"

if [ "${1:-}" = "--prepare" ]; then
  mkdir -p .whl
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $WHEELS || { echo "gpu_check: wheel download failed" >&2; exit 1; }
  for w in .whl/*.whl; do
    if [ "$(stat -c %s "$w")" -gt "$PART_BYTES" ]; then
      split -b "$PART_BYTES" -d "$w" "$w.part-" && rm "$w"
    fi
  done
  ls -la .whl
  echo "carry .whl in calls of at most 64 MiB each (move parts out of .whl between calls), copying into /tmp/recon-whl;"
  echo "then: RECON_WHEELS=/tmp/recon-whl bash scripts/gpu_check.sh"
  exit 0
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
OUT_DIR=${OUT:-$(mktemp -d)}
log() { printf '[gpu_check] %s\n' "$*" >&2; }

if [ -n "${RECON_WHEELS:-}" ]; then
  for first in "$RECON_WHEELS"/*.whl.part-00; do
    [ -e "$first" ] || continue
    whl=${first%.part-00}
    cat "$whl".part-* > "$whl" && rm -f "$whl".part-*
  done
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/recon-site "$RECON_WHEELS"/*.whl \
    || { log "installing the carried wheels failed"; exit 1; }
  export PYTHONPATH="/tmp/recon-site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c "import recon.renderers" >/dev/null 2>&1; then
  for pair in renderers:renderers datasets:datasets viewer:viewer configs:configs; do
    ln -sfn "../${pair%%:*}" "recon/${pair##*:}"
  done
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { log "no CUDA GPU visible to torch: nothing to check"; exit 2; }
"$PY" -c "import torch; print('[gpu_check] device:', torch.cuda.get_device_name(0), 'torch', torch.__version__)" >&2

log "1/2 parity tests on CUDA (tests/renderers, cuda cases)"
start=$(date +%s)
timeout 300 "$PY" -m pytest -q -p no:cacheprovider tests/renderers -k "cuda" -o addopts="--import-mode=importlib" \
  --junitxml="$OUT_DIR/gpu_parity.xml" 2>&1 | tail -n 40 | tee "$OUT_DIR/gpu_parity.log"
tests_rc=${PIPESTATUS[0]}
log "parity tests: exit $tests_rc in $(( $(date +%s) - start )) s"

log "2/2 benchmarks with --device cuda"
for bench in bench_splat bench_volume bench_raster; do
  [ -f "benchmarks/$bench.py" ] || continue
  timeout 120 "$PY" "benchmarks/$bench.py" --device cuda --json > "$OUT_DIR/$bench.json" 2> "$OUT_DIR/$bench.err" \
    || log "$bench failed (see $OUT_DIR/$bench.err)"
done

if [ -n "${RECON_CHAIR:-}" ]; then
  minutes=${RECON_TRAIN_MINUTES:-2}
  log "3/3 time-to-PSNR of the published presets on $RECON_CHAIR ($minutes training minutes each)"
  for method in triangles nerf; do
    timeout $(( minutes * 60 + 150 )) "$PY" -m recon.cli.main \
      train "$method" --data "$RECON_CHAIR" --preset "$method" --device cuda --max-minutes "$minutes" \
      --eval-every-minutes 0.25 --eval-images 20 --no-progress --logger none --run-dir "$OUT_DIR/chair_$method" \
      > "$OUT_DIR/chair_$method.log" 2>&1 || log "training $method failed (see $OUT_DIR/chair_$method.log)"
  done
fi

"$PY" - "$OUT_DIR" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

out = Path(sys.argv[1])
print("== GPU parity tests (cuda cases), per op family")
xml = out / "gpu_parity.xml"
if xml.is_file():
    counts: dict[str, Counter] = {}
    for case in ET.parse(xml).iter("testcase"):
        family = case.get("classname", "").split(".")[2:3] or ["?"]
        state = "failed" if case.find("failure") is not None or case.find("error") is not None else (
            "skipped" if case.find("skipped") is not None else "passed")
        counts.setdefault(family[0], Counter())[state] += 1
    for family, c in sorted(counts.items()):
        print(f"  {family:<12} passed {c['passed']:>4}  failed {c['failed']:>3}  skipped {c['skipped']:>3}")
print("== benchmarks (--device cuda)")
for path in sorted(out.glob("bench_*.json")):
    try:
        data = json.loads(path.read_text() or "null")
    except json.JSONDecodeError:
        print(f"  {path.stem}: no JSON output"); continue
    for case in (data or {}).get("cases", []):
        fields = {k: case.get(k) for k in ("name", "backend", "forward_s", "forward_backward_s") if k in case}
        print(f"  {path.stem:<13} " + "  ".join(f"{k}={v}" for k, v in fields.items()))
for run in sorted(out.glob("chair_*/")):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()] \
        if (run / "metrics.jsonl").is_file() else []
    evals = [r for r in rows if "eval_psnr" in r]
    final = json.loads((run / "eval.json").read_text()) if (run / "eval.json").is_file() else {}
    print(f"== time-to-PSNR, {run.name} (published preset, CUDA; periodic eval on {evals[0]['eval_images'] if evals else 0} test views)")
    for r in evals:
        print(f"  step {r['step']:>6}  {r['train_seconds'] / 60:6.2f} training min  PSNR {r['eval_psnr']:.2f}")
    if final:
        print(f"  final: PSNR {final.get('psnr')} / SSIM {final.get('ssim')} on {final.get('num_images')} test views")
EOF
exit "$tests_rc"
