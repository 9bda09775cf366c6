"""A picture of a superquadrics run: ground truth | render | the decomposition (each opaque block in its own flat
colour, the ground grey, the background white; blocks below the opacity threshold hidden).

Usage: python benchmarks/blocks_picture.py RUN_DIR [--split test] [--views 0 4] [--output blocks.png]

The run's newest checkpoint (a ``--restarts`` parent: the selected run) is rendered from the given views of its
dataset at the training resolution, one row per view. The decomposition render is the same scene with its textures
replaced by flat colours, so it shows what each block covers in the image.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PALETTE = np.array([
    [0.90, 0.10, 0.10], [0.10, 0.55, 0.95], [0.10, 0.75, 0.25], [0.95, 0.65, 0.05], [0.60, 0.20, 0.80],
    [0.05, 0.80, 0.80], [0.95, 0.35, 0.65], [0.55, 0.35, 0.15], [0.50, 0.80, 0.10], [0.20, 0.20, 0.60],
])  # fmt: skip
GROUND_GREY = 0.55


def _logit(x: float) -> float:
    x = min(max(x, 1e-3), 1 - 1e-3)
    return float(np.log(x / (1 - x)))


def opaque_blocks(scene) -> torch.Tensor:
    """(N,) bool: the alive blocks above the opacity threshold (those the exported mesh keeps)."""
    from recon.scenes.superquadrics.losses import opaque_mask

    return opaque_mask(scene.export_block_set().alpha_logits, opaque_threshold=scene.config.opaque_threshold)


def flat_coloured(scene):
    """A copy of the superquadrics ``scene`` whose block textures are flat palette colours (the ground grey, the
    background white) and whose transparent blocks are hidden."""
    import copy

    flat = copy.deepcopy(scene)
    with torch.no_grad():
        for i in range(flat.texture_logits.shape[0]):
            colour = torch.tensor(
                [_logit(c) for c in PALETTE[i % len(PALETTE)]], dtype=flat.texture_logits.dtype
            )
            flat.texture_logits[i] = colour
        flat.ground_texture_logits.fill_(_logit(GROUND_GREY))
        flat.background_texture_logits.fill_(_logit(1.0))
        flat.alpha_logits[~opaque_blocks(scene)] = -20.0  # hidden, as in the exported mesh of opaque blocks
    return flat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--split", default="test")
    parser.add_argument("--views", type=int, nargs="+", default=[0])
    parser.add_argument("--output", default="blocks.png")
    args = parser.parse_args()

    from PIL import Image

    from recon.scenes.base import RenderOptions
    from recon.train.restarts import resolve_restarts_parent
    from recon.train.run_io import load_run_dataset, open_run_config
    from recon.train.trainer import load_scene

    run_dir, _ = resolve_restarts_parent(args.run_dir)
    run, method, cfg = open_run_config(run_dir)
    if method.name != "superquadrics":
        raise SystemExit(f"{args.run_dir}: a {method.name} run; this picture is for superquadrics runs")
    dataset = load_run_dataset(cfg)
    scene, step = load_scene(method, cfg, run)
    flat = flat_coloured(scene)
    rows = []
    with torch.no_grad():
        for i in args.views:
            camera = dataset.camera(args.split, i)
            options = RenderOptions(background=dataset.background, depth=False)
            render = scene.render(camera, options).rgb[0].clamp(0, 1)
            parts = flat.render(camera, options).rgb[0].clamp(0, 1)
            rows.append(torch.cat([dataset.image(args.split, i), render, parts], 1))
    picture = (torch.cat(rows, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(picture).save(args.output)
    n_opaque = int(opaque_blocks(scene).sum())
    print(
        f"{args.output}: {run.path} step {step}, {n_opaque} opaque blocks, views {args.views} of {args.split}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
