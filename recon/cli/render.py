"""``recon render RUN_DIR [--trajectory orbit|dataset|PATH.json] [--output DIR|FILE.mp4] [--outputs rgb,depth,normal]``.

Images are written as PNGs into a folder, or as an H.264 ``.mp4`` through imageio-ffmpeg (a dependency, which
ships its own ffmpeg binary); if video writing fails the command says so and suggests a folder.
A JSON trajectory is ``{"frames": [{"T_cam_world": 4x4, "K": 3x3, "width": W, "height": H}, ...]}`` in the
run's normalised frame.
"""

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro
from rich.console import Console

from recon.core import Camera, ReconError
from recon.core.transforms import look_at
from recon.scenes.base import RenderOptions
from recon.train.run_io import load_run_dataset, open_run_config, resolve_device
from recon.train.trainer import load_scene

OUTPUTS = ("rgb", "depth", "normal", "alpha")


@dataclass(frozen=True)
class RenderArgs:
    run_dir: tyro.conf.Positional[str]
    """Run directory (its newest checkpoint)."""
    trajectory: str = "orbit"
    """orbit (around the training cameras' centre), dataset (the test cameras) or a trajectory .json."""
    output: str = ""
    """Output folder of PNGs, or a .mp4 file (default: RUN_DIR/renders/<trajectory>/)."""
    outputs: str = "rgb"
    """Comma-separated maps to write: rgb, depth, normal, alpha."""
    frames: int = 60
    """Frames of the orbit."""
    device: str = "auto"


def orbit_cameras(train: Camera, frames: int) -> Camera:
    """A circle at the training cameras' mean distance and height around their mean look-at point (origin)."""
    centers = train.centers().double()
    radius = float(centers[:, :2].norm(dim=-1).mean())
    height = float(centers[:, 2].mean())
    poses = []
    for k in range(frames):
        angle = 2 * math.pi * k / frames
        eye = torch.tensor([radius * math.cos(angle), radius * math.sin(angle), height], dtype=torch.float64)
        poses.append(
            look_at(
                eye, torch.zeros(3, dtype=torch.float64), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
            )
        )
    K = train.K[:1].expand(frames, 3, 3)
    return Camera(torch.stack(poses).float(), K.float(), train.width, train.height)


def json_cameras(path: Path) -> Camera:
    try:
        frames = json.loads(path.read_text())["frames"]
        cams = [Camera(torch.tensor(f["T_cam_world"])[None].float(), torch.tensor(f["K"])[None].float(),
                       int(f["width"]), int(f["height"])) for f in frames]  # fmt: skip
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ReconError(
            f"--trajectory {path}: expected {{'frames': [{{T_cam_world, K, width, height}}]}} ({exc})"
        ) from exc
    return Camera.cat(cams)


def main(argv: list[str]) -> int:
    import imageio.v3 as iio

    args = tyro.cli(RenderArgs, args=argv, prog="recon render")
    wanted = [o.strip() for o in args.outputs.split(",") if o.strip()]
    bad = [o for o in wanted if o not in OUTPUTS]
    if bad:
        raise ReconError(
            f"--outputs {args.outputs!r}: unknown {bad}; expected a comma list of {', '.join(OUTPUTS)}"
        )
    run, method, cfg = open_run_config(args.run_dir)
    device = resolve_device(args.device)
    scene, _ = load_scene(method, cfg, run, device=device)
    if args.trajectory == "orbit":
        cams = orbit_cameras(load_run_dataset(cfg).cameras("train"), args.frames)
    elif args.trajectory == "dataset":
        cams = load_run_dataset(cfg).cameras("test")
    else:
        cams = json_cameras(Path(args.trajectory))
    name = Path(args.trajectory).stem if args.trajectory.endswith(".json") else args.trajectory
    out = Path(args.output) if args.output else run.renders_dir / name
    video = out.suffix.lower() == ".mp4"
    dataset_bg = torch.tensor(run.read_dataset_json().get("background", [0.0, 0.0, 0.0]), dtype=torch.float32)
    options = RenderOptions(
        background=dataset_bg, backend=cfg.backend, depth=True, normals="normal" in wanted
    )
    frames: dict[str, list] = {o: [] for o in wanted}
    from rich.progress import track

    with torch.no_grad():
        for c in track(range(len(cams)), description="render", console=Console(stderr=True), transient=True):
            r = scene.render(cams[c], options)
            maps = {"rgb": r.rgb[0], "alpha": r.alpha[0].expand(-1, -1, 3)}
            if r.depth is not None:
                d = r.depth[0]
                maps["depth"] = (d / d.max().clamp_min(1e-6)).expand(-1, -1, 3)
            if r.normals is not None:
                n = r.normals[0]
                maps["normal"] = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-6) * 0.5 + 0.5
            for o in wanted:
                img = (maps[o].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
                if video:
                    frames[o].append(img)
                else:
                    (out / o).mkdir(parents=True, exist_ok=True)
                    iio.imwrite(out / o / f"{c:04d}.png", img)
    if video:
        for o in wanted:
            target = out if len(wanted) == 1 else out.with_name(f"{out.stem}_{o}.mp4")
            try:
                iio.imwrite(target, frames[o], fps=30)
            except (ValueError, ImportError, RuntimeError) as exc:
                raise ReconError(
                    f"--output {target}: cannot write mp4 here ({exc}); write PNGs to a folder instead"
                ) from exc
            print(target)
    else:
        print(out)
    print(f"rendered {len(cams)} frames", file=sys.stderr)
    return 0
