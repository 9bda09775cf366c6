"""Configuration of the superquadric blocks representation (spec superquadrics.md; defaults = published DTU).

Schedules are fractions of the training budget (steps or wall-clock), not epochs: the published DTU milestones
(epochs 750 / 1500 / 1700 of 1800) become 750/1800, 1500/1800 and 1700/1800.
"""

from dataclasses import dataclass
from typing import Literal

__all__ = ["DTU_EPOCHS", "SuperquadricsConfig"]

DTU_EPOCHS = 1800  # configs/dtu/default.yml of the reference


@dataclass(frozen=True)
class SuperquadricsConfig:
    """Superquadric blocks (Differentiable Blocks World): representation, losses and curriculum."""

    n_blocks: int = 10
    """Number of superquadric blocks N (10 in every published config)."""
    tessellation: Literal["icosphere", "uv_sphere"] = "icosphere"
    """Base tessellation of a block: an icosphere (published) or a UV sphere (cleaner seam and poles)."""
    icosphere_level: int = 1
    """Icosphere subdivision level of a block (1 = 42 vertices / 80 faces, as published)."""
    uv_sphere_lat: int = 16
    """Latitude bands of the UV-sphere tessellation."""
    uv_sphere_lon: int = 32
    """Longitude segments of the UV-sphere tessellation."""
    texture_size: int = 256
    """Texture width and height in texels, blocks, ground and background alike."""
    z_far: float = 10.0
    """Radius of the background sphere and half-extent of the ground square (canonical units)."""
    background_level: int = 2
    """Icosphere level of the background sphere (162 vertices / 320 faces)."""
    ground_subdivisions: int = 3
    """Times the ground square is split 1 -> 4 (128 faces)."""
    ratio_block_scene: float = 0.25
    """Block/scene ratio: a block's local vertex is ratio * S * x_sq."""
    scale_min: float = 0.2
    """Constant added to exp(log_scales) so that a block never collapses."""
    translation_range: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """T_range: per-axis spread of the initial block centres; the ground starts at y = -0.9 * T_range_y."""
    translation_init: Literal["gauss", "uniform"] = "gauss"
    """Initial centres N(0, 0.5^2) * T_range ('gauss') or U(-1, 1) * T_range ('uniform')."""
    opacity_init: float = 0.5
    """Initial block opacity alpha."""
    opacity_noise_std: float = 1.0
    """Std of the Gaussian noise added to the opacity logits every coarse-phase step (0 disables it)."""
    kill_threshold: float = 0.01
    """Blocks whose noise-free alpha falls below this are killed (not rendered, out of the parsimony term)."""
    opaque_threshold: float = 0.5
    """Fine phase and export keep only blocks with alpha above this; they render opaque."""
    decimate_factor: int = 8
    """Texture decimation factor of the first coarse stage (average pool + nearest upsample)."""
    sigma_coarse: float = 1e-4
    """Soft-rasteriser sigma of the coarse phase, PyTorch3D squared-NDC units (shorter side spans [-1, 1])."""
    sigma_fine: float = 5e-6
    """Soft-rasteriser sigma of the fine phase, squared-NDC units."""
    faces_per_pixel: int = 10
    """K, the faces kept per pixel by the layered rasteriser."""
    composite: Literal["reference", "over"] = "over"
    """Foreground/environment compositing: standard 'over' (default for new work) or the published formula
    ('reference': block colour multiplied by the coverage twice)."""
    decimate_until: float = 750 / DTU_EPOCHS
    """Training fraction until which textures are decimated (DTU epoch 750 of 1800)."""
    coarse_until: float = 1500 / DTU_EPOCHS
    """Training fraction at which the fine phase starts (DTU epoch 1500 of 1800)."""
    lr_decay_at: float = 1700 / DTU_EPOCHS
    """Training fraction at which every learning rate is multiplied by lr_decay_factor (DTU epoch 1700)."""
    lr_decay_factor: float = 0.1
    """Learning-rate multiplier applied from lr_decay_at on."""
    lr_geometry: float = 5e-3
    """Adam learning rate of the exponents, scales, rotations, translations, opacities and ground pose."""
    lr_texture: float = 5e-2
    """Adam learning rate of the block, ground and background textures."""
    rgb_weight: float = 1.0
    """Weight of the MSE photometric term."""
    perceptual_weight: float = 0.1
    """Weight of LPIPS-VGG (times f_p); optional, a run without it records the deviation."""
    parsimony_weight: float = 0.01
    """Weight of mean_j sqrt(alpha_j) (times f_c)."""
    tv_weight: float = 0.1
    """Weight of the texture total variation (times f_t)."""
    overlap_weight: float = 1.0
    """Weight of the overlap penalty (times f_c)."""
    overlap_points: int = 1000
    """Points sampled per block in its local box for the overlap penalty."""
    overlap_temperature: float = 0.005
    """Temperature of the occupancy sigmoid(-sdf / temperature)."""
    overlap_max_blocks: float = 1.95
    """Occupancy sum above which a point counts as inside two blocks."""
    export_tessellation_level: int | None = None
    """Tessellation level of exported blocks: None = as trained; an icosphere level (or, for the UV sphere,
    2^(level - icosphere_level) times the trained size) re-tessellates the analytic surface."""
    export_ground_extent: float = 3.0
    """Half-extent of the reduced ground in the exported mesh of opaque blocks."""
    ground: bool = True
    """Render the ground plane (off for object-centric captures seen from below, where it would hide the object;
    its parameters stay in the state either way)."""
    roi: Literal["auto", "points", "box"] = "auto"
    """Where the region of interest comes from: ``points`` frames it on the subject's SfM points
    (``recon.scenes.scene_type.object_region``: real captures with a room or a street around the subject),
    ``box`` on the dataset's scene box; ``auto`` takes ``points`` when the cameras surround the subject and the
    dataset has SfM points near it, else ``box`` (resolved before training and recorded in config.yaml)."""
    roi_radius: float = 0.0
    """Region-of-interest radius in the dataset's normalised frame, mapped to canonical radius 2 (0: half the
    largest side of the dataset's scene box, or the subject's region with ``roi`` points)."""
    roi_center: tuple[float, float, float] | None = None
    """Region-of-interest centre in the dataset's normalised frame (None: the scene box's centre; set by ``roi``
    points)."""
    ground_height: float | None = None
    """Initial height of the ground in the canonical frame (None: ``-0.9 * T_range_y``; ``roi`` points puts it
    under the subject)."""

    def __post_init__(self) -> None:
        if self.n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {self.n_blocks}")
        if self.texture_size % self.decimate_factor:
            raise ValueError(
                f"texture_size ({self.texture_size}) must be a multiple of decimate_factor ({self.decimate_factor})"
            )
        if not 0.0 <= self.decimate_until <= self.coarse_until <= 1.0:
            raise ValueError(
                "need 0 <= decimate_until <= coarse_until <= 1, got "
                f"decimate_until={self.decimate_until}, coarse_until={self.coarse_until}"
            )
        if not 0.0 <= self.lr_decay_at <= 1.0:
            raise ValueError(f"lr_decay_at must lie in [0, 1], got {self.lr_decay_at}")
        if self.roi_radius < 0:
            raise ValueError(f"roi_radius must be >= 0 (0: from the scene box), got {self.roi_radius}")
        if self.roi not in ("auto", "points", "box"):
            raise ValueError(f"roi must be one of auto|points|box, got {self.roi!r}")
        if self.roi_center is not None and len(self.roi_center) != 3:
            raise ValueError(f"roi_center must hold 3 numbers, got {self.roi_center!r}")
        if not 0.0 < self.kill_threshold < self.opaque_threshold < 1.0:
            raise ValueError("need 0 < kill_threshold < opaque_threshold < 1")
