"""Plain records the viewer exchanges with its host: view settings, training statistics, cameras, geometry.

The viewer never imports a scene or a trainer. Its host (``recon view`` or ``recon train --viewer``) hands it a
:data:`RenderFn` and, optionally, the records below.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from jaxtyping import Float
from torch import Tensor

from recon.core import Camera, Mesh, RenderOutput

RenderMode = Literal["rgb", "depth", "normals", "alpha"]
RENDER_MODES: tuple[RenderMode, ...] = ("rgb", "depth", "normals", "alpha")
Colormap = Literal["turbo", "viridis"]
COLORMAPS: tuple[Colormap, ...] = ("turbo", "viridis")

DEFAULT_MAX_RESOLUTION = 1024  # longest image side of a full-resolution render (CPU-friendly default)
DEFAULT_PREVIEW_SCALE = 0.25  # resolution factor of the preview render while the camera moves


@dataclass(frozen=True)
class ViewState:
    """What the browser asks to see, besides the camera.

    Attributes:
        mode: which map to show: colour, depth (colour-mapped), normals (mapped to RGB) or alpha (grey).
        background: RGB in [0, 1] behind the scene; the render callback composites over it.
        max_resolution: cap on the longest side of a full-resolution render, in pixels.
        preview: True for the low-resolution render made while the camera moves.
        preview_scale: resolution factor of preview renders relative to full ones.
        colormap: colour map of the depth mode.
    """

    mode: RenderMode = "rgb"
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    max_resolution: int = DEFAULT_MAX_RESOLUTION
    preview: bool = False
    preview_scale: float = DEFAULT_PREVIEW_SCALE
    colormap: Colormap = "turbo"

    def __post_init__(self) -> None:
        if self.mode not in RENDER_MODES:
            raise ValueError(f"ViewState.mode must be one of {RENDER_MODES}, got {self.mode!r}")
        if self.colormap not in COLORMAPS:
            raise ValueError(f"ViewState.colormap must be one of {COLORMAPS}, got {self.colormap!r}")
        if len(self.background) != 3 or not all(0.0 <= float(c) <= 1.0 for c in self.background):
            raise ValueError(f"ViewState.background must be three floats in [0, 1], got {self.background!r}")
        if int(self.max_resolution) < 1:
            raise ValueError(f"ViewState.max_resolution must be positive, got {self.max_resolution}")
        if not 0.0 < float(self.preview_scale) <= 1.0:
            raise ValueError(f"ViewState.preview_scale must lie in (0, 1], got {self.preview_scale}")

    @property
    def resolution_scale(self) -> float:
        """Factor applied to the full-resolution size for this render (``preview_scale`` while previewing)."""
        return float(self.preview_scale) if self.preview else 1.0


RenderFn = Callable[[Camera, ViewState], RenderOutput]
"""The viewer's only way to draw the scene: render one camera (C=1, OpenCV axes, world frame of the scene) and
return images of shape (1, H, W, D). The viewer calls it without gradients, under the shared lock if one is given."""


@dataclass(frozen=True)
class TrainingStats:
    """Progress of a training run, shown in the viewer's training panel.

    Attributes:
        step: current optimisation step.
        max_steps: planned number of steps, or None.
        loss: latest training loss, or None.
        psnr: latest training PSNR in dB, or None.
        num_primitives: current number of primitives (triangles, samples, voxels...), or None.
        steps_per_second: training throughput, or None.
        rays_per_second: ray/pixel throughput, or None.
    """

    step: int
    max_steps: int | None = None
    loss: float | None = None
    psnr: float | None = None
    num_primitives: int | None = None
    steps_per_second: float | None = None
    rays_per_second: float | None = None


@dataclass(frozen=True)
class CameraView:
    """A training camera drawn as a frustum, optionally with its image as a thumbnail.

    Attributes:
        camera: one camera (C=1), OpenCV axes, in the world frame of the render callback.
        image: (H, W, 3) float image in [0, 1] (any size; the viewer shrinks it to a thumbnail), or None.
        name: label of the camera (e.g. the image file name).
    """

    camera: Camera
    image: Float[Tensor, "H W 3"] | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if len(self.camera) != 1:
            raise ValueError(f"CameraView.camera must hold one camera, got {len(self.camera)}")
        if self.image is not None and (self.image.ndim != 3 or self.image.shape[-1] != 3):
            raise ValueError(f"CameraView.image must have shape (H, W, 3), got {tuple(self.image.shape)}")


@dataclass(frozen=True)
class PointCloud:
    """Points drawn client-side (e.g. the SfM points of a COLMAP dataset).

    Attributes:
        points: (P, 3) positions in the world frame of the render callback.
        colors: (P, 3) RGB in [0, 1], or None for a uniform grey.
        point_size: world-space size of a point; None picks 1/500 of the cloud's extent.
    """

    points: Float[Tensor, "P 3"]
    colors: Float[Tensor, "P 3"] | None = None
    point_size: float | None = None

    def __post_init__(self) -> None:
        if self.points.ndim != 2 or self.points.shape[-1] != 3:
            raise ValueError(f"PointCloud.points must have shape (P, 3), got {tuple(self.points.shape)}")
        if self.colors is not None and self.colors.shape != self.points.shape:
            raise ValueError(
                f"PointCloud.colors must have shape {tuple(self.points.shape)}, got {tuple(self.colors.shape)}"
            )


Geometry = Mesh | PointCloud
"""Native geometry drawn in the browser (cheap to show client-side): a mesh or triangle soup, or points."""
