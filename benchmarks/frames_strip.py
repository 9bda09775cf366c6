"""A README strip (and optionally a video) from a folder of rendered frames (``recon render RUN --output DIR``).

Usage: python benchmarks/frames_strip.py DIR [--count 6] [--width 240] [--output strip.png] [--video out.mp4]

Takes ``--count`` evenly spaced frames of the folder's PNGs (sorted by name), scales each to ``--width`` pixels
(nearest neighbour) and writes them side by side; ``--video`` also encodes every frame as an H.264 MP4 at 30 fps
(imageio-ffmpeg), so a slow renderer needs to render the frames only once.
"""

import argparse
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--width", type=int, default=240)
    parser.add_argument("--output", default="strip.png")
    parser.add_argument("--video", default="")
    args = parser.parse_args()

    import imageio.v3 as iio
    from PIL import Image

    paths = sorted(Path(args.folder).glob("*.png"))
    if not paths:
        raise SystemExit(f"{args.folder}: no PNG frames; render them with `recon render RUN --output DIR`")
    picks = np.linspace(0, len(paths) - 1, min(args.count, len(paths))).round().astype(int)
    tiles = []
    for i in picks:
        image = Image.open(paths[i]).convert("RGB")
        height = round(image.height * args.width / image.width)
        tiles.append(np.asarray(image.resize((args.width, height), Image.NEAREST)))
    Image.fromarray(np.concatenate(tiles, 1)).save(args.output)
    print(f"{args.output}: frames {picks.tolist()} of {len(paths)} in {args.folder}")
    if args.video:
        frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
        frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]  # H.264 wants even sizes
        iio.imwrite(args.video, frames, fps=30, codec="libx264")
        print(f"{args.video}: {len(frames)} frames at 30 fps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
