"""Per-image exposure compensation of the training renders (real captures, docs/nerf.md).

A hand-held capture changes exposure and white balance from photo to photo (auto exposure). A scene fitted to such
photos explains the changes with view-dependent colour and with semi-transparent floaters near the cameras, which
show in any novel view. Here every training image ``i`` gets its own affine colour transform, applied to the
render before the loss and **only during training**:

.. math::

    \\hat c = e^{g_i - \\bar g} \\odot c + \\alpha\\,(b_i - \\bar b),

with ``c`` the rendered colour (premultiplied, over black), ``alpha`` its opacity, ``g_i`` a per-channel log gain,
``b_i`` a per-channel bias and the bars the means over the training images. Subtracting the means fixes the gauge:
the identity (what evaluation, export, the viewer and ``recon render`` use) is the *average* exposure of the
training photos, so the scene cannot drift to a colour that no photo had. The parameters start at zero (identity)
and train with the scene's Adam. Images without exposure changes (synthetic data) leave them near zero.

Example:
    >>> import torch
    >>> comp = ExposureCompensation(num_views=4)
    >>> rgb, alpha = torch.rand(2, 8, 3), torch.ones(2, 8, 1)
    >>> torch.equal(comp(rgb, alpha, torch.tensor([0, 3])), rgb)  # identity at the start
    True
"""

from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from recon.scenes.base import ExponentialDecayLr, ParamGroup

__all__ = ["AppearanceMode", "ExposureCompensation", "uses_compensation"]

AppearanceMode = Literal["off", "affine", "auto"]
LR = 5e-3
"""Adam learning rate of the log gains and biases (decayed 10x over the budget, like the fields)."""
FINAL_LR_RATIO = 0.1


class ExposureCompensation(nn.Module):
    """Affine per-image colour correction of training renders (see the module docstring).

    Args:
        num_views: number of training images.

    Parameters (trained; zero = identity):
        log_gain: (N, 3) per-channel log gains.
        bias: (N, 3) per-channel biases.
    """

    def __init__(self, num_views: int) -> None:
        super().__init__()
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        self.log_gain = nn.Parameter(torch.zeros(num_views, 3))
        self.bias = nn.Parameter(torch.zeros(num_views, 3))

    def forward(
        self,
        rgb: Float[Tensor, "C *P 3"],
        alpha: Float[Tensor, "C *P 1"],
        view_indices: Int[Tensor, " C"],
        background: Float[Tensor, "3"] | None = None,
    ) -> Float[Tensor, "C *P 3"]:
        """The corrected render of the training views ``view_indices``.

        Args:
            rgb: (C, ..., 3) rendered colour (rays ``(C, R, 3)`` or images ``(C, H, W, 3)``), over black or, when
                given, over ``background``.
            alpha: (C, ..., 1) rendered opacity.
            view_indices: (C,) training-view index of each camera.
            background: (3,) the colour ``rgb`` was composited over (it stays uncorrected), or None for black.

        Returns:
            (C, ..., 3) corrected colour; differentiable w.r.t. ``rgb``, ``alpha``, ``log_gain`` and ``bias``.
        """
        if rgb.shape[0] != view_indices.shape[0] or alpha.shape[:-1] != rgb.shape[:-1]:
            raise ValueError(
                f"rgb {tuple(rgb.shape)}, alpha {tuple(alpha.shape)} and view_indices "
                f"{tuple(view_indices.shape)} disagree"
            )
        index = view_indices.to(self.log_gain.device, torch.long)
        shape = (rgb.shape[0],) + (1,) * (rgb.dim() - 2) + (3,)
        gain = torch.exp(self.log_gain - self.log_gain.mean(0))[index].view(shape)
        bias = (self.bias - self.bias.mean(0))[index].view(shape)
        if background is None:
            return rgb * gain + alpha * bias
        behind = (1.0 - alpha) * background
        return (rgb - behind) * gain + alpha * bias + behind

    def param_groups(self) -> list[ParamGroup]:
        """The two optimiser groups (``appearance.log_gain``, ``appearance.bias``), not per-row."""
        schedule = ExponentialDecayLr(final_ratio=FINAL_LR_RATIO)
        return [
            ParamGroup(f"appearance.{name}", p, LR, schedule, per_row=False)
            for name, p in self.named_parameters()
        ]


def uses_compensation(mode: AppearanceMode, has_alpha: bool) -> bool:
    """Whether a run compensates exposure: ``affine`` always, ``auto`` for images without alpha masks (photos;
    rendered datasets carry alpha and a fixed exposure), ``off`` never."""
    if mode not in ("off", "affine", "auto"):
        raise ValueError(f"appearance must be off, affine or auto, got {mode!r}")
    return mode == "affine" or (mode == "auto" and not has_alpha)
