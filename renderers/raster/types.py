"""Typed records of the mesh rasterizer: what ``rasterize`` returns and every shading op reads."""

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

PAD_DIST = (
    1e10  # dists of empty slots (px^2): exp(-PAD_DIST / sigma) underflows to 0 for any sigma < 1e8 px^2
)


@dataclass
class Fragments:
    """The K nearest faces per pixel, with what shading needs to interpolate and composite them.

    ``pix_to_face[c, y, x, k] = f`` means face ``f`` (an index into the ``faces`` given to ``rasterize``) is the
    k-th nearest face, by interpolated camera-z depth, covering (or, with ``blur_sq > 0``, lying within
    ``sqrt(blur_sq)`` pixels of) the centre ``(x + 0.5, y + 0.5)`` of pixel ``(y, x)`` of camera ``c``; -1 pads.
    Padded slots have ``bary = 0``, ``depth = 0`` and ``dists`` equal to a large finite positive constant
    (``PAD_DIST`` of ``recon.renderers.raster.api``), so ``exp(-dists / sigma)`` is 0 there and no NaN appears.

    Attributes:
        pix_to_face: (C, H, W, K) int64 face index per slot, -1 where empty. Not differentiable.
        bary: (C, H, W, K, 3) perspective-correct barycentrics of the pixel centre w.r.t. the face's three
            vertices (of the original, unclipped face); differentiable w.r.t. vertex positions unless the op was
            asked to detach them.
        dists: (C, H, W, K) signed squared 2D distance in pixels^2 from the pixel centre to the face's
            projected boundary: negative inside, positive outside; differentiable w.r.t. vertex positions.
        depth: (C, H, W, K) camera-frame z of the fragment (perspective-correct); differentiable.
        face_to_mesh: (F,) int64 mesh index of every face when several meshes were rasterized in one call
            (batched meshes), else None.
    """

    pix_to_face: Int[Tensor, "C H W K"]
    bary: Float[Tensor, "C H W K 3"]
    dists: Float[Tensor, "C H W K"]
    depth: Float[Tensor, "C H W K"]
    face_to_mesh: Int[Tensor, " F"] | None = None

    @property
    def layers(self) -> int:
        """K, the number of face slots per pixel."""
        return int(self.pix_to_face.shape[-1])

    def covered(self) -> Tensor:
        """(C, H, W, K) bool: the slot holds a face."""
        return self.pix_to_face >= 0

    def clipped_bary(self) -> Float[Tensor, "C H W K 3"]:
        """``bary`` clamped to ``[0, 1]`` and renormalised to sum to 1 (what texture lookups of blurred fragments
        outside their face use, spec superquadrics.md section 6); empty slots stay 0. Differentiable like bary."""
        clamped = self.bary.clamp(0.0, 1.0)
        total = clamped.sum(-1, keepdim=True)
        return torch.where(total > 0, clamped / total.clamp_min(torch.finfo(total.dtype).tiny), clamped)
