"""Depth colour maps and the conversion of a :class:`RenderOutput` into the 8-bit image the browser shows.

NumPy only (no matplotlib): turbo and viridis are evaluated from published polynomial fits.
"""

import numpy as np
import torch

from recon.core import RenderOutput
from recon.viewer.state import Colormap, ViewState

# Turbo, polynomial fit by A. Mikhailov (Google AI blog, 2019, "turbo_colormap_approximation"): coefficients of
# c(x) = sum_k a_k x^k per channel, k = 0..5. It deviates from the 256-entry turbo table by up to ~0.13 at the
# two dark ends; the map stays perceptually ordered, which is all a depth display needs.
_TURBO = np.array(
    [
        [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
        [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
        [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
    ]
)
# Viridis, degree-6 least-squares fit of matplotlib's table (M. Zucker, shadertoy "viridis approximation"),
# within about 0.015 of the table (largest at the yellow end).
_VIRIDIS = np.array(
    [
        [0.2777273272234177, 0.1050930431085774, -0.3308618287255563, -4.634230498983486, 6.228269936347081, 4.776384997670288, -5.435455855934631],
        [0.005407344544966578, 1.404613529898575, 0.214847559468213, -5.799100973351585, 14.17993336680509, -13.74514537774601, 4.645852612178535],
        [0.3340998053353061, 1.384590162594685, 0.09509516302823659, -19.33244095627987, 56.69055260068105, -65.35303263337234, 26.3124352495832],
    ]
)  # fmt: skip
_COEFFS = {"turbo": _TURBO, "viridis": _VIRIDIS}

DEPTH_LOW_PERCENTILE = 1.0  # depth range ignores the nearest/farthest 1% of covered pixels (floaters, edges)
DEPTH_HIGH_PERCENTILE = 99.0
MIN_ALPHA_FOR_DEPTH = (
    0.5  # pixels this opaque define the depth range; fainter ones would pull it to the far end
)
MIN_NORMAL_LENGTH = 1e-8  # guard for normalising alpha-weighted normals of empty pixels


def apply_colormap(values: np.ndarray, name: Colormap = "turbo") -> np.ndarray:
    """Map scalars in [0, 1] (clipped) to RGB in [0, 1].

    Args:
        values: array of any shape ``(*S,)``.
        name: "turbo" or "viridis".

    Returns:
        ``(*S, 3)`` float64 colours.

    Example:
        >>> apply_colormap(np.array([0.0, 1.0]), "viridis").shape
        (2, 3)
    """
    if name not in _COEFFS:
        raise ValueError(f"colormap must be one of {sorted(_COEFFS)}, got {name!r}")
    x = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    coeffs = _COEFFS[name]
    out = np.zeros((*x.shape, 3))
    for k in range(coeffs.shape[1] - 1, -1, -1):  # Horner's scheme
        out = out * x[..., None] + coeffs[:, k]
    return np.clip(out, 0.0, 1.0)


def depth_to_rgb(
    depth: np.ndarray, alpha: np.ndarray, *, colormap: Colormap, background: tuple[float, float, float]
) -> np.ndarray:
    """Colour-map a depth image; near is the low end of the map. Empty pixels show the background.

    Args:
        depth: (H, W) depth (camera z or ray distance).
        alpha: (H, W) accumulated opacity in [0, 1].
        colormap: colour map name.
        background: RGB in [0, 1] for pixels with zero alpha.

    Returns:
        (H, W, 3) float64 in [0, 1], composited over ``background`` by alpha.
    """
    covered = (alpha >= MIN_ALPHA_FOR_DEPTH) & np.isfinite(depth)
    if not covered.any():
        covered = (alpha > 0) & np.isfinite(depth)
    if covered.any():
        lo, hi = np.percentile(depth[covered], [DEPTH_LOW_PERCENTILE, DEPTH_HIGH_PERCENTILE])
    else:
        lo, hi = 0.0, 1.0
    span = max(float(hi - lo), 1e-12)
    rgb = apply_colormap((np.nan_to_num(depth) - lo) / span, colormap)
    a = np.clip(alpha, 0.0, 1.0)[..., None]
    return rgb * a + np.asarray(background)[None, None] * (1.0 - a)


def normals_to_rgb(
    normals: np.ndarray, alpha: np.ndarray, *, background: tuple[float, float, float]
) -> np.ndarray:
    """Show unit normals as colours ``(n + 1) / 2`` over the background.

    Args:
        normals: (H, W, 3) world-space normals, possibly alpha-weighted and unnormalised.
        alpha: (H, W) accumulated opacity in [0, 1].
        background: RGB in [0, 1].
    """
    length = np.linalg.norm(normals, axis=-1, keepdims=True)
    unit = normals / np.maximum(length, MIN_NORMAL_LENGTH)
    a = np.clip(alpha, 0.0, 1.0)[..., None]
    return (unit * 0.5 + 0.5) * a + np.asarray(background)[None, None] * (1.0 - a)


def output_to_image(output: RenderOutput, state: ViewState) -> np.ndarray:
    """The 8-bit RGB image of one render for the view state's mode.

    Args:
        output: a render of one camera, maps of shape (1, H, W, D) or (H, W, D).
        state: the view state (mode, colour map, background).

    Returns:
        (H, W, 3) uint8.

    Raises:
        ValueError: if the mode needs a map the render did not produce (depth or normals are None).
    """

    def to_numpy(t: torch.Tensor) -> np.ndarray:
        t = t.detach()
        if t.ndim == 4:
            t = t[0]
        return t.to("cpu", torch.float32).numpy()

    alpha = to_numpy(output.alpha)[..., 0]
    if state.mode == "rgb":
        rgb = to_numpy(output.rgb)
    elif state.mode == "alpha":
        rgb = np.repeat(alpha[..., None], 3, axis=-1)
    elif state.mode == "depth":
        if output.depth is None:
            raise ValueError("this scene's render produced no depth map")
        rgb = depth_to_rgb(
            to_numpy(output.depth)[..., 0], alpha, colormap=state.colormap, background=state.background
        )
    else:
        if output.normals is None:
            raise ValueError("this scene's render produced no normals")
        rgb = normals_to_rgb(to_numpy(output.normals), alpha, background=state.background)
    return (np.clip(np.nan_to_num(rgb), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
