"""What every scene's render returns, and what a scene declares it can render.

``RenderOutput`` is the one typed record between scenes and their consumers (trainer, losses, strategies, viewer,
exporters, evaluation). Every auxiliary output is a typed optional field; a consumer that needs a field asks for it
with :meth:`RenderOutput.require`, which raises :class:`MissingRenderOutput` naming the scene and the field instead
of skipping silently. Depths are always camera-frame z (the distance along the camera's optical axis), whatever the
renderer computed internally: scenes convert once, consumers never do.

A scene declares what it can produce in :class:`RenderCapabilities` (a class attribute of every Scene); trainers
and strategies check their needs against it once, before training starts (:func:`require_capabilities`).
"""

from dataclasses import dataclass, fields, replace

from jaxtyping import Bool, Float, Int
from torch import Tensor

from recon.core.errors import ReconError

__all__ = [
    "EikonalSamples",
    "MissingRenderOutput",
    "PrimitiveStats",
    "RenderCapabilities",
    "RenderOutput",
    "require_capabilities",
]


class MissingRenderOutput(ReconError):
    """A consumer needs a render output (or capability) that the scene did not produce (or cannot)."""


@dataclass
class PrimitiveStats:
    """Per-primitive statistics of one render, for densification strategies (detached, not differentiable).

    Attributes:
        max_blending: (C, N) largest blending weight ``alpha_i T_i`` of primitive ``i`` over the pixels of camera c.
        radius_px: (C, N) int32 screen-space radius of the primitive's footprint in whole pixels (0 if not visible).
        inradius_px: (C, N) screen-space inradius (for triangles) in pixels (0 if not visible).
        visible: (C, N) whether the primitive touched at least one tile/pixel of camera c.
    """

    max_blending: Float[Tensor, "C N"]
    radius_px: Int[Tensor, "C N"]
    inradius_px: Float[Tensor, "C N"]
    visible: Bool[Tensor, "C N"]


@dataclass
class EikonalSamples:
    """Eikonal residuals of an SDF render, per ray (for the eikonal regulariser).

    Attributes:
        residual_sum: (*batch, 1) sum over the ray's samples of ``(|grad f| - 1)^2``; differentiable w.r.t. the
            field parameters (double backward through the SDF gradient).
        num_samples: (*batch, 1) number of samples of the ray (float, not differentiable).
    """

    residual_sum: Float[Tensor, "*batch 1"]
    num_samples: Float[Tensor, "*batch 1"]


@dataclass
class RenderOutput:
    """Per-pixel (or per-ray) render results. ``*batch`` is (C, H, W) for images or (C, R) for selected pixels.

    Attributes:
        rgb: (*batch, 3) colour composited over the background.
        alpha: (*batch, 1) accumulated opacity.
        depth: (*batch, 1) expected camera-frame z (0 where alpha is 0), or None if not computed.
        normals: (*batch, 3) world-space normals (alpha-weighted, not normalised), or None.
        depth_median: (*batch, 1) median camera-frame z (where the transmittance crosses 1/2), or None.
        distortion: (*batch, 1) the 2DGS/mip-NeRF-360 distortion map, or None.
        stats: per-primitive statistics (``RenderOptions.stats``), or None.
        eikonal: eikonal residuals of SDF scenes, or None.
        depth_deviation: (*batch, 1) for a render given ``RenderOptions.depth_targets``: the weight the ray puts
            off its target, ``sum_i w_i min(|t_i - t*| / t*, 1)`` over the samples ``t_i`` with weights ``w_i``
            (``t*`` the target's distance along the ray; 0 on rays without a target), or None.
        producer: name of the scene class that rendered this (for error messages).
    """

    rgb: Float[Tensor, "*batch 3"]
    alpha: Float[Tensor, "*batch 1"]
    depth: Float[Tensor, "*batch 1"] | None = None
    normals: Float[Tensor, "*batch 3"] | None = None
    depth_median: Float[Tensor, "*batch 1"] | None = None
    distortion: Float[Tensor, "*batch 1"] | None = None
    stats: PrimitiveStats | None = None
    eikonal: EikonalSamples | None = None
    depth_deviation: Float[Tensor, "*batch 1"] | None = None
    producer: str = "scene"

    def require(self, name: str, *, by: str) -> Tensor:
        """The tensor field ``name``, or a :class:`MissingRenderOutput` naming the scene, the field and ``by``."""
        if name not in _TENSOR_FIELDS:
            raise ValueError(
                f"RenderOutput has no tensor field {name!r}; fields: {', '.join(_TENSOR_FIELDS)}"
            )
        value = getattr(self, name)
        if value is None:
            raise MissingRenderOutput(
                f"{by} needs '{name}', but the {self.producer} render did not produce it"
            )
        return value

    def require_stats(self, *, by: str) -> PrimitiveStats:
        """``stats``, or a :class:`MissingRenderOutput` naming the scene and ``by``."""
        if self.stats is None:
            raise MissingRenderOutput(
                f"{by} needs per-primitive 'stats', but the {self.producer} render has none"
            )
        return self.stats

    def require_eikonal(self, *, by: str) -> EikonalSamples:
        """``eikonal``, or a :class:`MissingRenderOutput` naming the scene and ``by``."""
        if self.eikonal is None:
            raise MissingRenderOutput(
                f"{by} needs 'eikonal' samples, but the {self.producer} render has none"
            )
        return self.eikonal

    def map_pixels(self, fn) -> "RenderOutput":
        """A copy with ``fn`` applied to every per-pixel tensor field (rgb, alpha, depth, ...); ``stats`` (per
        primitive) is kept as is. ``fn`` maps a (*batch, D) tensor to a (*batch', D) tensor."""
        changes = {
            name: fn(getattr(self, name)) for name in _TENSOR_FIELDS if getattr(self, name) is not None
        }
        if self.eikonal is not None:
            changes["eikonal"] = EikonalSamples(fn(self.eikonal.residual_sum), fn(self.eikonal.num_samples))
        return replace(self, **changes)


_TENSOR_FIELDS = tuple(f.name for f in fields(RenderOutput) if f.name not in ("stats", "eikonal", "producer"))


@dataclass(frozen=True)
class RenderCapabilities:
    """What a scene can render besides rgb and alpha (a class attribute of every Scene).

    Attributes:
        depth: expected camera-z depth.
        normals: world-space normals.
        depth_median: median camera-z depth.
        distortion: the distortion map.
        stats: per-primitive statistics (densification).
        eikonal: eikonal samples (SDF regularisation).
        pixel_subsets: renders a subset of pixels (``Scene.render(..., pixels=...)``) natively (ray-based fields)
            rather than rendering the full image and gathering.
        depth_deviation: the termination's deviation from per-ray depth targets (``RenderOptions.depth_targets``).
    """

    depth: bool = True
    normals: bool = False
    depth_median: bool = False
    distortion: bool = False
    stats: bool = False
    eikonal: bool = False
    pixel_subsets: bool = False
    depth_deviation: bool = False

    def missing(self, needed: "RenderCapabilities") -> list[str]:
        """Names of capabilities ``needed`` asks for that this one lacks."""
        return [f.name for f in fields(self) if getattr(needed, f.name) and not getattr(self, f.name)]


def require_capabilities(
    scene_name: str, has: RenderCapabilities, needed: RenderCapabilities, *, by: str
) -> None:
    """Raise :class:`MissingRenderOutput` if ``has`` lacks anything ``needed`` asks for (names scene and consumer)."""
    missing = has.missing(needed)
    if missing:
        raise MissingRenderOutput(f"{by} needs {', '.join(missing)}, which {scene_name} cannot render")


def ray_t_to_z(t: Float[Tensor, "*batch 1"], directions_cam_z: Float[Tensor, "*batch 1"]) -> Tensor:
    """Camera-frame z of points at distance ``t`` along unit rays whose camera-frame z component is given.

    .. math:: z = t \\, (R_{cam,world} \\, d)_z
    """
    return t * directions_cam_z.to(t.dtype)
