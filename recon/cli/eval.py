"""``recon eval RUN_DIR [--split test] [--max-images N] [--save-renders] [--mesh] [--output PATH]``: writes
RUN_DIR/eval.json (or PATH), prints it. On the parent folder of ``recon train ... --restarts N`` it evaluates the
selected run (eval.json goes into that run's folder) and says which on standard error."""

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

from recon.train.restarts import resolve_restarts_parent
from recon.train.run_io import evaluate_run, open_run_config, resolve_device


@dataclass(frozen=True)
class EvalArgs:
    run_dir: tyro.conf.Positional[str]
    """Run directory to evaluate (its newest checkpoint); a --restarts parent: its selected run."""
    split: str = "test"
    """Dataset split to render."""
    max_images: int = 0
    """Evaluate an evenly spread subset of this many views (0: all, the published protocol)."""
    save_renders: bool = False
    """Also write the rendered images to RUN_DIR/renders/eval_<split>/."""
    geometry: bool = True
    """Chamfer distance / F-score of the fused surface when the dataset has a ground-truth mesh."""
    device: str = "auto"
    """cpu | cuda | cuda:N | auto."""
    mesh: bool = False
    """Also render the run's native exported mesh with the hard rasterizer at the same views and report its
    PSNR/SSIM under "mesh" (how much quality survives export)."""
    output: Path | None = None
    """Write eval.json here instead of RUN_DIR/eval.json."""


def main(argv: list[str]) -> int:
    args = tyro.cli(EvalArgs, args=argv, prog="recon eval")
    run_dir, note = resolve_restarts_parent(args.run_dir)
    if note:
        print(note, file=sys.stderr)
    run, method, cfg = open_run_config(run_dir)
    result = evaluate_run(run, method, cfg, split=args.split, max_images=args.max_images,
                          save_renders=args.save_renders, device=resolve_device(args.device),
                          geometry=args.geometry, mesh=args.mesh, output=args.output)  # fmt: skip
    print(json.dumps(result, indent=2))
    return 0
