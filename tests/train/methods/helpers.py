"""A tiny COLMAP text dataset for the method tests: two cameras with different intrinsics, SfM points."""

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from recon.core.transforms import look_at, rotmat_to_quat

W, H = 24, 16
VIEWS = 9  # every-8th split: test 0 and 8, train 1..7
# two cameras with clearly different intrinsics (focal and principal point): views alternate between them
INTRINSICS = [(20.0, 20.0, 12.0, 8.0), (31.0, 29.0, 10.5, 7.0)]


def _poses(kind: str, scale: float) -> list[torch.Tensor]:
    up = torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)
    poses = []
    for i in range(VIEWS):
        a = 2 * math.pi * i / VIEWS
        if kind == "forward":  # a small grid of cameras all looking down +z (LLFF-like)
            eye = torch.tensor([0.3 * math.cos(a), 0.2 * math.sin(a), -4.0], dtype=torch.float64)
            target = eye + torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
        else:  # an orbit around the origin (object-centric)
            eye = torch.tensor([3 * math.cos(a), 0.5, 3 * math.sin(a)], dtype=torch.float64)
            target = torch.zeros(3, dtype=torch.float64)
        T = look_at(eye * scale, target * scale, up)
        poses.append(T)
    return poses


def write_colmap(
    root: Path,
    *,
    kind: str = "forward",
    scale: float = 1.0,
    points: int = 40,
    far_points: int = 0,
    seen_by_all: bool = False,
) -> Path:
    """A COLMAP text model (``sparse/0``) with the two ``INTRINSICS`` alternating over ``VIEWS`` images and
    ``points`` SfM points near the origin (and ``far_points`` on a sphere of radius 10: a room's walls), plus
    random images. Each point's track lists the first image, or every image with ``seen_by_all``."""
    model = root / "sparse" / "0"
    model.mkdir(parents=True)
    lines = [f"{c + 1} PINHOLE {W} {H} {fx} {fy} {cx} {cy}" for c, (fx, fy, cx, cy) in enumerate(INTRINSICS)]
    (model / "cameras.txt").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(0)
    lines = []
    for i, T in enumerate(_poses(kind, scale)):
        q, t = rotmat_to_quat(T[:3, :3]).tolist(), T[:3, 3].tolist()
        lines += [" ".join(str(v) for v in [i + 1, *q, *t, i % 2 + 1, f"img_{i:02d}.png"]), ""]
        (root / "images").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(
            root / "images" / f"img_{i:02d}.png"
        )
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    far = rng.normal(size=(far_points, 3))
    far = 10.0 * far / np.linalg.norm(far, axis=1, keepdims=True)
    xyz = np.concatenate([rng.uniform(-0.5, 0.5, (points, 3)), far]) * scale
    track = " ".join(f"{i + 1} 0" for i in range(VIEWS if seen_by_all else 1))
    lines = [f"{k + 1} {x} {y} {z} 200 100 50 0.5 {track}" for k, (x, y, z) in enumerate(xyz)]
    (model / "points3D.txt").write_text("\n".join(lines) + "\n")
    return root
