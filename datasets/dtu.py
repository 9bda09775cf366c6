"""DTU in the IDR layout (``cameras.npz``, as used by IDR and MonoSDF) and the NeuS layout (``cameras_sphere.npz``),
each with ``image/`` (or ``images/``) and an optional ``mask/`` folder; ``cameras.npz`` wins when both exist.

``world_mat_i`` (4x4) holds the projection ``P_i = world_mat_i[:3, :4] = K_i [R_i | t_i]`` of image ``i`` (images
and masks sorted by file name) in the ORIGINAL world frame; RQ decomposition of ``P_i[:, :3]`` recovers ``K_i``
(upper triangular, positive diagonal, ``K[2, 2] = 1``) and ``R_i`` (a rotation), and ``t_i = K_i^-1 P_i[:, 3]``,
directly in OpenCV axes: ``T_cam_world = [[R_i, t_i], [0, 1]]``. ``scale_mat_i`` maps the normalised frame (the
object inside the unit sphere) to the original one, so the recorded normalisation is ``scale_mat^-1`` and the scene
box is ``[-1, 1]^3``. Splits: every 8th image held out for test.
"""

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recon.core.transforms import make_T, similarity_scale
from recon.datasets.base import (
    LoadOptions,
    SceneDataset,
    check_mask,
    check_pose,
    every_nth_dataset,
    image_frame,
)
from recon.datasets.errors import DatasetError
from recon.datasets.images import image_header
from recon.datasets.llff import list_images
from recon.datasets.paths import resolve_inside

CAMERA_FILES = ("cameras.npz", "cameras_sphere.npz")  # IDR, NeuS

SCALE_MAT_TOL = 1e-6  # scale_mat_i of one scene must agree (relative) to be one normalisation
SIMILARITY_TOL = 1e-4  # max deviation of scale_mat's linear part from a scaled rotation
UNIT_BOX_HALF = 1.0  # IDR normalisation puts the object inside the unit sphere


def decompose_projection(P: Tensor) -> tuple[Tensor, Tensor]:
    """Split a 3x4 projection ``P = lambda K [R | t]`` into ``K`` (``K[2, 2] = 1``, positive diagonal) and
    ``T_cam_world`` (OpenCV axes), for any nonzero ``lambda`` of either sign.

    .. math:: P_{:, :3} = (\\lambda K) R \\text{ (RQ)}, \\quad t = (\\lambda K)^{-1} P_{:, 3}
    """
    import scipy.linalg  # lazy: only DTU needs it

    P = P.to(torch.float64)
    M = P[:, :3]
    if float(torch.linalg.det(M)) < 0:  # lambda < 0: flip so that R comes out a proper rotation
        P, M = -P, -M
    K_np, R_np = scipy.linalg.rq(M.numpy())
    K, R = torch.from_numpy(K_np), torch.from_numpy(R_np)
    D = torch.diag(torch.sign(torch.diagonal(K)))  # D @ D = I: move signs from K into R
    K, R = K @ D, D @ R
    t = torch.linalg.solve(K, P[:, 3])
    return K / K[2, 2], make_T(R, t)


def load_dtu(root: Path, opts: LoadOptions) -> SceneDataset:
    """Load a DTU folder in the IDR or NeuS layout (see the module docstring)."""
    source = next((root / n for n in CAMERA_FILES if (root / n).is_file()), root / CAMERA_FILES[0])
    try:
        cams = dict(np.load(source, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise DatasetError(
            f"cannot read {source}: expected an .npz with world_mat_i and scale_mat_i ({exc})"
        ) from exc
    image_dir = root / "image" if (root / "image").is_dir() else root / "images"
    allow = opts.allow_outside_root
    paths = [
        resolve_inside(root, p, what=f"image {p.name} of {image_dir}", allow_outside=allow)
        for p in list_images(image_dir)
    ]
    if not paths:
        raise DatasetError(f"no images in {root / 'image'}: expected one image per world_mat_i of {source}")
    masks = [
        resolve_inside(root, p, what=f"mask {p.name} of {root / 'mask'}", allow_outside=allow)
        for p in list_images(root / "mask")
    ]
    if masks and len(masks) != len(paths):
        raise DatasetError(
            f"{root / 'mask'} holds {len(masks)} masks for {len(paths)} images: expected one per image"
        )
    S = _normalization(cams, len(paths), source)
    frames = []
    for i, path in enumerate(paths):
        key = f"world_mat_{i}"
        if key not in cams:
            raise DatasetError(f"{source} has no {key}: expected one world_mat per image in {image_dir}")
        world_mat = torch.from_numpy(np.asarray(cams[key], dtype=np.float64))
        if world_mat.shape not in ((4, 4), (3, 4)):
            raise DatasetError(f"{source}: {key} has shape {tuple(world_mat.shape)}; expected 4x4 or 3x4")
        if not bool(torch.isfinite(world_mat).all()):
            raise DatasetError(
                f"{source}: {key} contains NaN or infinite values; expected a finite projection"
            )
        if abs(float(torch.linalg.det(world_mat[:3, :3]))) == 0.0:
            raise DatasetError(f"{source}: {key} is singular; expected a projection K [R | t]")
        K, T = decompose_projection(world_mat[:3, :4])
        T = check_pose(T, f"{source} ({key})")
        header = image_header(path)
        mask_path = masks[i] if masks else None
        if mask_path is not None:
            check_mask(mask_path, header.width, header.height, path)
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        frames.append(image_frame(name, path, header, K, T, mask_path=mask_path))
    box = torch.tensor([[-UNIT_BOX_HALF] * 3, [UNIT_BOX_HALF] * 3])
    return every_nth_dataset(
        "dtu", root, frames, normalization=S, scene_box=box, background=opts.background,
        downscale=opts.downscale, test_every=opts.test_every,
    )  # fmt: skip


def _normalization(cams: dict, count: int, source: Path) -> Tensor:
    """``scale_mat^-1`` (identity without scale_mat_i); all scale_mat_i must agree."""
    if "scale_mat_0" not in cams:
        return torch.eye(4, dtype=torch.float64)
    scale_mat = torch.from_numpy(np.asarray(cams["scale_mat_0"], dtype=np.float64))
    if scale_mat.shape != (4, 4) or not bool(torch.isfinite(scale_mat).all()):
        raise DatasetError(
            f"{source}: scale_mat_0 must be a finite 4x4 matrix, got shape {tuple(scale_mat.shape)}"
        )
    for i in range(1, count):
        other = cams.get(f"scale_mat_{i}")
        if other is not None and not np.allclose(other, scale_mat.numpy(), rtol=SCALE_MAT_TOL, atol=0.0):
            raise DatasetError(
                f"{source}: scale_mat_{i} differs from scale_mat_0; expected one normalisation per scene"
            )
    s = float(similarity_scale(scale_mat))
    R = scale_mat[:3, :3] / max(s, 1e-300)
    if s <= 0 or float((R.T @ R - torch.eye(3, dtype=torch.float64)).abs().max()) > SIMILARITY_TOL:
        raise DatasetError(
            f"{source}: scale_mat_0 is not a similarity (rotation, translation, uniform scale)"
        )
    return torch.linalg.inv(scale_mat)
