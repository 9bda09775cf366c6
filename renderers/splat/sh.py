"""Real spherical harmonics colour (spec triangle_splats.md section 1; the 3DGS basis and sign convention)."""

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["SH_C0", "eval_sh", "num_sh_coeffs", "rgb_to_sh"]

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)
MAX_SH_DEGREE = 3


def num_sh_coeffs(degree: int) -> int:
    """Number of SH coefficients per channel up to ``degree`` (``(degree + 1)^2``)."""
    return (degree + 1) ** 2


def rgb_to_sh(rgb: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3"]:
    """DC coefficient whose colour is ``rgb``: ``(rgb - 0.5) / C0``."""
    return (rgb - 0.5) / SH_C0


def eval_sh(degree: int, sh: Float[Tensor, "N K 3"], dirs: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
    """Colour from SH coefficients: ``rgb = max(0, sum_lm c_lm Y_lm(dir) + 0.5)``.

    Args:
        degree: active degree (0..3); coefficients beyond ``(degree + 1)^2`` are ignored.
        sh: (N, K, 3) coefficients with ``K >= (degree + 1)^2``.
        dirs: (N, 3) viewing directions ``centroid - camera_centre`` (normalised here).

    Returns:
        (N, 3) non-negative colours. Differentiable w.r.t. ``sh`` and ``dirs`` (zero gradient on clamped channels).
    """
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"degree must be in [0, {MAX_SH_DEGREE}], got {degree}")
    if sh.ndim != 3 or sh.shape[-1] != 3 or sh.shape[1] < num_sh_coeffs(degree):
        raise ValueError(f"sh must have shape (N, >= {num_sh_coeffs(degree)}, 3), got {tuple(sh.shape)}")
    if dirs.shape != (sh.shape[0], 3):
        raise ValueError(f"dirs must have shape ({sh.shape[0]}, 3), got {tuple(dirs.shape)}")
    result = SH_C0 * sh[:, 0]
    if degree > 0:
        d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        x, y, z = d[:, 0:1], d[:, 1:2], d[:, 2:3]
        result = result - SH_C1 * y * sh[:, 1] + SH_C1 * z * sh[:, 2] - SH_C1 * x * sh[:, 3]
        if degree > 1:
            xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
            result = (
                result
                + SH_C2[0] * xy * sh[:, 4]
                + SH_C2[1] * yz * sh[:, 5]
                + SH_C2[2] * (2.0 * zz - xx - yy) * sh[:, 6]
                + SH_C2[3] * xz * sh[:, 7]
                + SH_C2[4] * (xx - yy) * sh[:, 8]
            )
            if degree > 2:
                result = (
                    result
                    + SH_C3[0] * y * (3.0 * xx - yy) * sh[:, 9]
                    + SH_C3[1] * xy * z * sh[:, 10]
                    + SH_C3[2] * y * (4.0 * zz - xx - yy) * sh[:, 11]
                    + SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy) * sh[:, 12]
                    + SH_C3[4] * x * (4.0 * zz - xx - yy) * sh[:, 13]
                    + SH_C3[5] * z * (xx - yy) * sh[:, 14]
                    + SH_C3[6] * x * (xx - 3.0 * yy) * sh[:, 15]
                )
    return torch.clamp_min(result + 0.5, 0.0)
