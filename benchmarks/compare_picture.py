"""A side-by-side picture of runs on the same dataset: ground truth | run 1 | run 2 | ..., one row per test view.

Usage: python benchmarks/compare_picture.py RUN_DIR [RUN_DIR ...] [--views 0 2] [--width 360] [--output cmp.png]

Each run's renders come from its final evaluation (``RUN_DIR/renders/eval_test/test_NNNN.png``, written by
``recon eval RUN_DIR --save-renders``), the ground truth from the first run's dataset at its training resolution; the
runs must share that resolution and split. Each row is scaled to ``--width`` pixels per image (nearest neighbour,
0 = as is), and each image gets its PSNR against the ground truth printed on the console.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _resize(image: np.ndarray, width: int) -> np.ndarray:
    if width <= 0 or image.shape[1] == width:
        return image
    h = round(image.shape[0] * width / image.shape[1])
    rows = (np.arange(h) * image.shape[0] / h).astype(int)
    cols = (np.arange(width) * image.shape[1] / width).astype(int)
    return image[rows][:, cols]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--views", type=int, nargs="+", default=[0])
    parser.add_argument("--width", type=int, default=0)
    parser.add_argument("--output", default="compare.png")
    args = parser.parse_args()

    from PIL import Image

    from recon.train.run_io import load_run_dataset, open_run_config

    _, _, cfg = open_run_config(args.runs[0])
    dataset = load_run_dataset(cfg)
    rows = []
    for i in args.views:
        truth = dataset.image("test", i).numpy()
        row = [truth]
        for run in args.runs:
            path = Path(run) / "renders" / "eval_test" / f"test_{i:04d}.png"
            if not path.is_file():
                raise SystemExit(f"{path}: no such render; run `recon eval {run} --save-renders` first")
            image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
            if image.shape != truth.shape:
                raise SystemExit(f"{path}: {image.shape[1]}x{image.shape[0]}, the ground truth is "
                                 f"{truth.shape[1]}x{truth.shape[0]}")  # fmt: skip
            psnr = -10 * np.log10(max(float(((image - truth) ** 2).mean()), 1e-10))
            print(f"view {i}: {run}: {psnr:.2f} dB")
            row.append(image)
        rows.append(np.concatenate([_resize(im, args.width) for im in row], 1))
    picture = (np.concatenate(rows, 0).clip(0, 1) * 255).round().astype(np.uint8)
    Image.fromarray(picture).save(args.output)
    print(f"{args.output}: ground truth | {' | '.join(args.runs)}; test views {args.views}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
