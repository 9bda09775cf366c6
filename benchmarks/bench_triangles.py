"""Triangle-splat quality vs CPU time: train with a wall-clock budget, then tabulate PSNR/SSIM against time.

Usage (the benchmark of benchmarks/README.md, "Triangle splats"):

    .venv/bin/python benchmarks/bench_triangles.py --data ../shared/data/nerf_synthetic_chair_200 --minutes 20

runs ``recon train triangles --data DATA --max-minutes MINUTES --eval-every-minutes 2 --eval-images 20`` (the
CPU-budget preset on CPU; the final evaluation uses all test views over the dataset background) and prints a
markdown table of the periodic evaluations (20 evenly spread test views) and the final one. ``--run-dir`` of an
existing run only tabulates it.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path


def table(run_dir: Path) -> str:
    records = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    evals = [r for r in records if "eval_psnr" in r]
    final = json.loads((run_dir / "eval.json").read_text())
    last_train = [r for r in records if "train_seconds" in r][-1]
    lines = [
        "| training minutes | step | triangles | test views | PSNR (dB) | SSIM |",
        "|---|---|---|---|---|---|",
    ]
    for r in evals:
        lines.append(f"| {r['train_seconds'] / 60:.1f} | {r['step']} | {r['num_primitives']} | {r['eval_images']} | "
                     f"{r['eval_psnr']:.2f} | {r['eval_ssim']:.4f} |")  # fmt: skip
    lines.append(f"| {last_train['train_seconds'] / 60:.1f} (final) | {final['step']} | {final['num_primitives']} | "
                 f"{final['num_images']} (all) | **{final['psnr']:.2f}** | **{final['ssim']:.4f}** |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="../shared/data/nerf_synthetic_chair_200")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--run-dir", default="", help="tabulate this existing run instead of training")
    args = parser.parse_args()
    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        cmd = [sys.executable, "-m", "recon.cli.main", "train", "triangles", "--data", args.data, "--max-minutes",
               str(args.minutes), "--eval-every-minutes", "2", "--eval-images", "20", "--experiment", "bench"]  # fmt: skip
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        run_dir = Path(out.strip().splitlines()[-1])
    print(table(run_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
