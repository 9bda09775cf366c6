"""How much a SparseFlex subdivision damages a trained surface, per ``strategy.subdivide_init``.

Loads a sparseflex run's newest checkpoint, scores its test views (PSNR over the dataset background, mask IoU where
the dataset has masks), then for each init splits a copy of the scene once (``subdivide_band``), trims the band
(``maintain_band``) and scores it again, with no training step in between. Usage::

    recon train sparseflex --data /tmp/cow --max-minutes 3 --threads 1 --strategy.max-resolution 64 --run-dir RUN
    python benchmarks/sparseflex_split.py RUN
"""

import argparse
import copy

import torch

from recon.scenes.base import RenderOptions
from recon.train.param_optimizer import ParamOptimizer
from recon.train.run_io import load_run_dataset, open_run_config
from recon.train.sparseflex_strategy import SUBDIVIDE_INITS, maintain_band, subdivide_band
from recon.train.trainer import load_scene


def score(scene, dataset) -> tuple[float, float]:
    """Mean test PSNR and mask IoU (nan without masks) of the scene's eval renders."""
    background = dataset.background.float()
    psnrs, ious = [], []
    with torch.no_grad():
        for i in range(len(dataset.cameras("test"))):
            out = scene.render(dataset.camera("test", i), RenderOptions(background=background))
            psnrs.append(float(-10 * torch.log10(((out.rgb[0] - dataset.image("test", i)) ** 2).mean())))
            alpha = dataset.alpha("test", i)
            if alpha is not None:
                mine, theirs = out.alpha[0, ..., 0] > 0.5, alpha[..., 0] > 0.5
                ious.append(float((mine & theirs).sum() / (mine | theirs).sum()))
    return sum(psnrs) / len(psnrs), (sum(ious) / len(ious) if ious else float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run, method, cfg = open_run_config(args.run)
    scene, step = load_scene(method, cfg, run)
    dataset = load_run_dataset(cfg)
    print("| split | R | voxels | test PSNR | mask IoU |\n|---|---|---|---|---|")
    p, iou = score(scene, dataset)
    print(
        f"| before (step {step}) | {int(scene.resolution)} | {scene.num_primitives()} | {p:.2f} | {iou:.4f} |"
    )
    for init in SUBDIVIDE_INITS:
        split = copy.deepcopy(scene).train()
        optimizer = ParamOptimizer(split.param_groups())
        subdivide_band(split, optimizer, init=init)  # pyright: ignore[reportArgumentType]
        maintain_band(split, optimizer)
        p, iou = score(split.eval(), dataset)
        print(f"| {init} | {int(split.resolution)} | {split.num_primitives()} | {p:.2f} | {iou:.4f} |")


if __name__ == "__main__":
    main()
