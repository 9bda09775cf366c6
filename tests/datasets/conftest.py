"""Writers of small dataset folders from known cameras, for the loader tests (fixture ``dw``).

Every writer takes cameras in recon's conventions (float64 ``K`` (C, 3, 3) and OpenCV ``T_cam_world`` (C, 4, 4))
and writes them the way the format stores them, so a loader must undo exactly the format's conventions.
"""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recon.core.transforms import invert_T, look_at, rotmat_to_quat

OPENGL_FROM_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


def random_cameras(
    n: int, *, width: int, height: int, seed: int = 0, square_pixels: bool = False, centered: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` cameras around the origin (radius 2..4) looking near it, with varied intrinsics (float64)."""
    g = torch.Generator().manual_seed(seed)
    Ts, Ks = [], []
    for _ in range(n):
        d = torch.randn(3, generator=g, dtype=torch.float64)
        eye = d / d.norm() * (2 + 2 * torch.rand(1, generator=g, dtype=torch.float64))
        target = 0.3 * torch.randn(3, generator=g, dtype=torch.float64)
        Ts.append(look_at(eye, target, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)))
        fx = float(0.8 * width + 0.4 * width * torch.rand(1, generator=g, dtype=torch.float64))
        fy = fx if square_pixels else fx * float(1 + 0.1 * torch.rand(1, generator=g, dtype=torch.float64))
        cx, cy = width / 2, height / 2
        if not centered:
            cx += float(torch.randn(1, generator=g, dtype=torch.float64))
            cy += float(torch.randn(1, generator=g, dtype=torch.float64))
        Ks.append(torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=torch.float64))
    return torch.stack(Ks), torch.stack(Ts)


def write_png(path: Path, width: int, height: int, *, seed: int = 0, mode: str = "RGB") -> np.ndarray:
    """A random 8-bit image; returns its pixels as uint8 (H, W, channels)."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[..., 0] if channels == 1 else arr, mode=mode).save(path)
    return arr


def gl_c2w(T_cam_world: torch.Tensor) -> list:
    """OpenCV ``T_cam_world`` -> the camera-to-world OpenGL matrix of Blender/nerfstudio JSON."""
    return (invert_T(T_cam_world) @ OPENGL_FROM_OPENCV).tolist()


class DatasetWriters:
    """Namespace of writers (exposed as the ``dw`` fixture; test modules cannot import conftest)."""

    random_cameras = staticmethod(random_cameras)
    write_png = staticmethod(write_png)
    gl_c2w = staticmethod(gl_c2w)

    @staticmethod
    def blender(
        root: Path,
        splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
        *,
        width: int,
        height: int,
        extras=None,
    ) -> Path:
        """Blender folder; ``K`` must have fx = fy and a centred principal point (camera_angle_x)."""
        for split, (K, T) in splits.items():
            frames = []
            for i in range(len(T)):
                write_png(root / split / f"r_{i}.png", width, height, seed=i, mode="RGBA")
                frames.append(
                    {"file_path": f"./{split}/r_{i}", "rotation": 0.0, "transform_matrix": gl_c2w(T[i])}
                )
            angle = 2 * float(torch.atan(0.5 * width / K[0, 0, 0]))
            meta = {"camera_angle_x": angle, "frames": frames, **(extras or {})}
            (root / f"transforms_{split}.json").write_text(json.dumps(meta, indent=1))
        return root

    @staticmethod
    def nerfstudio(
        root: Path,
        K: torch.Tensor,
        T: torch.Tensor,
        *,
        width: int,
        height: int,
        applied: torch.Tensor | None = None,
        per_frame: bool = True,
        top: dict | None = None,
        frame_extras: list[dict] | None = None,
    ) -> Path:
        """nerfstudio transforms.json; ``applied`` (4x4 rigid) is applied to the poses as ns-process-data does."""
        frames = []
        for i in range(len(T)):
            write_png(root / "images" / f"frame_{i:05d}.png", width, height, seed=i)
            T_stored = T[i]
            if applied is not None:  # T_world_cam in the applied frame = A @ T_world_cam
                T_stored = invert_T(applied @ invert_T(T[i]))
            frame = {"file_path": f"images/frame_{i:05d}.png", "transform_matrix": gl_c2w(T_stored)}
            if per_frame:
                frame.update(
                    fl_x=float(K[i, 0, 0]), fl_y=float(K[i, 1, 1]), cx=float(K[i, 0, 2]), cy=float(K[i, 1, 2])
                )
            if frame_extras:
                frame.update(frame_extras[i])
            frames.append(frame)
        meta: dict = {"w": width, "h": height, "frames": frames}
        if not per_frame:
            meta.update(
                fl_x=float(K[0, 0, 0]), fl_y=float(K[0, 1, 1]), cx=float(K[0, 0, 2]), cy=float(K[0, 1, 2])
            )
        if applied is not None:
            meta["applied_transform"] = applied[:3].tolist()
        meta.update(top or {})
        root.mkdir(parents=True, exist_ok=True)
        (root / "transforms.json").write_text(json.dumps(meta, indent=1))
        return root

    @staticmethod
    def colmap(
        root: Path,
        cameras: list[tuple[str, int, int, list[float]]],
        T: torch.Tensor,
        camera_of_image: list[int],
        *,
        binary: bool,
        points: np.ndarray | None = None,
        write_images: bool = True,
        tracks: list[list[int]] | None = None,
    ) -> Path:
        """A COLMAP model in ``sparse/0`` (text or binary) + ``images/``; cameras are (model, w, h, params).
        ``tracks``: per point, the (0-based) images observing it (default: the first image only)."""
        from recon.datasets.colmap import MODEL_IDS

        model = root / "sparse" / "0"
        model.mkdir(parents=True, exist_ok=True)
        q = rotmat_to_quat(T[:, :3, :3])
        t = T[:, :3, 3]
        names = [f"img_{i:03d}.png" for i in range(len(T))]
        if write_images:
            for i, name in enumerate(names):
                _, w, h, _ = cameras[camera_of_image[i]]
                write_png(root / "images" / name, w, h, seed=i)
        pts = np.zeros((0, 3)) if points is None else points
        rgb = (np.arange(len(pts) * 3).reshape(-1, 3) % 256).astype(np.uint8)
        observers = tracks if tracks is not None else [[0]] * len(pts)
        if binary:
            with open(model / "cameras.bin", "wb") as f:
                f.write(struct.pack("<Q", len(cameras)))
                for cid, (m, w, h, params) in enumerate(cameras, start=1):
                    f.write(struct.pack("<iiQQ", cid, MODEL_IDS[m], w, h))
                    f.write(struct.pack("<" + "d" * len(params), *params))
            with open(model / "images.bin", "wb") as f:
                f.write(struct.pack("<Q", len(T)))
                for i in range(len(T)):
                    f.write(
                        struct.pack(
                            "<idddddddi", i + 1, *q[i].tolist(), *t[i].tolist(), camera_of_image[i] + 1
                        )
                    )
                    f.write(names[i].encode() + b"\x00")
                    f.write(struct.pack("<Q", 2))  # two observations, skipped by the reader
                    f.write(struct.pack("<ddqddq", 1.5, 2.5, 1, 3.5, 4.5, -1))
            with open(model / "points3D.bin", "wb") as f:
                f.write(struct.pack("<Q", len(pts)))
                for k in range(len(pts)):
                    track = observers[k]
                    f.write(
                        struct.pack("<QdddBBBdQ", k + 1, *pts[k].tolist(), *rgb[k].tolist(), 0.5, len(track))
                    )
                    for image in track:
                        f.write(struct.pack("<ii", image + 1, 0))
        else:
            lines = ["# Camera list with one line of data per camera:"]
            for cid, (m, w, h, params) in enumerate(cameras, start=1):
                lines.append(" ".join([str(cid), m, str(w), str(h), *(repr(float(p)) for p in params)]))
            (model / "cameras.txt").write_text("\n".join(lines) + "\n")
            lines = ["# Image list with two lines of data per image:"]
            for i in range(len(T)):
                vals = [repr(float(v)) for v in (*q[i].tolist(), *t[i].tolist())]
                lines.append(" ".join([str(i + 1), *vals, str(camera_of_image[i] + 1), names[i]]))
                lines.append("1.5 2.5 1 3.5 4.5 -1" if i % 2 else "")
            (model / "images.txt").write_text("\n".join(lines) + "\n")
            lines = ["# 3D point list"]
            for k in range(len(pts)):
                vals = [repr(float(v)) for v in pts[k]]
                track = [f"{image + 1} 0" for image in observers[k]]
                lines.append(" ".join([str(k + 1), *vals, *(str(int(c)) for c in rgb[k]), "0.5", *track]))
            (model / "points3D.txt").write_text("\n".join(lines) + "\n")
        return root

    @staticmethod
    def llff(
        root: Path, K: torch.Tensor, T: torch.Tensor, *, width: int, height: int, image_scale: int = 1
    ) -> Path:
        """poses_bounds.npy + images/ (files ``image_scale`` times smaller than the hwf size when > 1)."""
        rows = []
        for i in range(len(T)):
            T_world_cam = invert_T(T[i])
            x, y, z = T_world_cam[:3, 0], T_world_cam[:3, 1], T_world_cam[:3, 2]
            R_llff = torch.stack([y, x, -z], dim=1)  # [down, right, backwards]
            hwf = torch.tensor([height, width, float(K[i, 0, 0])], dtype=torch.float64)
            M = torch.cat([R_llff, T_world_cam[:3, 3:], hwf[:, None]], dim=1)
            rows.append(np.concatenate([M.numpy().reshape(-1), [0.5, 8.0]]))
            write_png(
                root / "images" / f"IMG_{i:04d}.png", width // image_scale, height // image_scale, seed=i
            )
        np.save(root / "poses_bounds.npy", np.stack(rows))
        return root

    @staticmethod
    def dtu(
        root: Path,
        K: torch.Tensor,
        T: torch.Tensor,
        scale_mat: torch.Tensor,
        *,
        width: int,
        height: int,
        masks: bool = True,
        lambdas: list[float] | None = None,
    ) -> Path:
        """cameras.npz (world_mat_i = lambda_i K [R | t], scale_mat_i) + image/ + mask/."""
        arrays = {}
        for i in range(len(T)):
            P = (lambdas[i] if lambdas else 1.0) * (K[i] @ T[i][:3, :4])
            world_mat = torch.eye(4, dtype=torch.float64)
            world_mat[:3, :4] = P
            arrays[f"world_mat_{i}"] = world_mat.numpy()
            arrays[f"scale_mat_{i}"] = scale_mat.numpy()
            write_png(root / "image" / f"{i:06d}.png", width, height, seed=i)
            if masks:
                write_png(root / "mask" / f"{i:03d}.png", width, height, seed=100 + i, mode="L")
        np.savez(root / "cameras.npz", **arrays)
        return root


@pytest.fixture
def dw() -> type[DatasetWriters]:
    return DatasetWriters
