"""What every scene's render returns."""

from dataclasses import dataclass, field

from jaxtyping import Float
from torch import Tensor


@dataclass
class RenderOutput:
    """Per-pixel (or per-ray) render results. ``*batch`` is (C, H, W) for images or (C, R) for selected pixels.

    Attributes:
        rgb: (*batch, 3) colour composited over the background.
        alpha: (*batch, 1) accumulated opacity.
        depth: (*batch, 1) expected camera-frame depth (z for rasterizers, ray distance t for volume renderers;
            see ``depth_kind``), 0 where alpha is 0; None if not computed.
        normals: (*batch, 3) world-space normals (alpha-weighted, not normalised), or None.
        depth_kind: "z" (camera-frame z) or "t" (distance along the unit ray).
        extras: named auxiliary maps of the representation (e.g. distortion), for losses and debugging.
    """

    rgb: Float[Tensor, "*batch 3"]
    alpha: Float[Tensor, "*batch 1"]
    depth: Float[Tensor, "*batch 1"] | None = None
    normals: Float[Tensor, "*batch 3"] | None = None
    depth_kind: str = "z"
    extras: dict[str, Tensor] = field(default_factory=dict)
