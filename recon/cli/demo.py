"""``recon demo``: the quick start. Writes the built-in synthetic "object" scene, trains triangle splats on it with
the CPU-budget preset (a time cap keeps it within a few minutes), evaluates on the test views, exports the
triangle soup and a fused surface, and prints where everything is and how to open the viewer.
"""

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

from recon.cli import train as train_cli
from recon.cli.export import ExportArgs, export_run


@dataclass(frozen=True)
class DemoArgs:
    output_dir: str = "outputs/demo"
    """Folder for the synthetic dataset and the run."""
    scene: str = "object"
    """Built-in synthetic scene (see 'recon data synth --help')."""
    resolution: int = 100
    """Image size of the synthetic views."""
    views: int = 60
    """Training views."""
    test_views: int = 20
    """Test views."""
    steps: int = 3000
    """Training steps."""
    max_minutes: float = 2.5
    """Training time cap (the demo stops early on slow machines, with a checkpoint and eval)."""
    seed: int = 0


def main(argv: list[str]) -> int:
    args = tyro.cli(DemoArgs, args=argv, prog="recon demo")
    from recon.datasets.synthetic import write_scene

    start = time.perf_counter()
    out = Path(args.output_dir)
    data = out / f"data_{args.scene}_{args.resolution}"
    if not (data / "transforms_train.json").is_file():
        print(f"writing synthetic scene {args.scene!r} to {data} ...", file=sys.stderr)
        write_scene(args.scene, data, views=args.views, test_views=args.test_views, resolution=args.resolution,
                    seed=args.seed)  # fmt: skip
    run_dir = out / "runs" / time.strftime("%Y-%m-%d_%H%M%S")
    train_argv = [
        "triangles", "--data", str(data), "--run-dir", str(run_dir), "--preset", "triangles_cpu",
        "--steps", str(args.steps), "--max-minutes", str(args.max_minutes), "--seed", str(args.seed),
        "--scene.random-init-points", "2000", "--scene.max-init-points", "2000", "--strategy.cap", "6000",
    ]  # fmt: skip
    code = train_cli.main(train_argv)
    if code != 0:
        return code
    evaluation = json.loads((run_dir / "eval.json").read_text())
    soup = export_run(ExportArgs(run_dir=str(run_dir), format="glb", mesh="native"))
    splats = export_run(ExportArgs(run_dir=str(run_dir), format="splat-ply", all_triangles=True))
    surface = export_run(ExportArgs(run_dir=str(run_dir), format="glb", mesh="surface", resolution=128))
    minutes = (time.perf_counter() - start) / 60
    lines = [
        "",
        f"recon demo finished in {minutes:.1f} minutes",
        f"  dataset:        {data}",
        f"  run:            {run_dir}",
        f"  test PSNR/SSIM: {evaluation['psnr']:.2f} dB / {evaluation['ssim']:.3f} on {evaluation['num_images']} views"
        f" (eval.json)",
        f"  triangle soup:  {soup[0]}",
        f"  splat PLY:      {splats[0]}",
        f"  fused surface:  {surface[0]}",
        f"  view it:        recon view {run_dir}",
    ]
    print("\n".join(line for line in lines if line))
    return 0
