"""Grid resolutions that follow the training views' pixel footprint (docs/budget.md, "The fields' finest level").

The finest level of a hash grid should resolve what the training pixels can show, no more: a finer level only
adds hash collisions and cells that no pixel constrains. The number of pixels the training views span across the
scene's cube box, at its centre,

.. math::

    n_{\\text{px}} = \\operatorname{median}_i \\ \\frac{L\\, f_i}{d_i}
    \\qquad (L \\text{ the box side, } f_i \\text{ the focal length in pixels, } d_i \\text{ the distance from camera
    } i \\text{ to the box centre}),

sets the finest resolution to ``cells_per_pixel x n_px`` (a multiple of ``quantum``, within ``[low, high]``).
``cells_per_pixel`` is the published recipe's own ratio: NeRF-synthetic views at 800 px span
``NERF_SYNTHETIC_800_PX`` = 3 x 1111.1 / 4.031 = 826.9 px across the +-1.5 box, where the recipes use 4096 (nerf)
and 2048 (neus, and sparseflex's colour field) cells; the CPU presets' 1024 and 512 for the same scenes at 200 px
(206.7 px across) are the same ratios. So the rule gives the published value at the published resolution, the CPU presets' at 200 px, and scales
with the image resolution and the camera distance of any other data.

It follows the data, not the budget or the device: a hash-grid lookup costs the same at any finest resolution
(the levels and the table size are unchanged), so there is nothing for a budget to buy. Like the capacity rules
it applies to a new run under ``--max-minutes`` when the user did not set the field, and is recorded in
``capacity.json``. nerf applies it to bounded scenes only (an occupancy grid over the box); unbounded and
forward-facing captures keep their preset, since their cameras sit inside or near the contracted box.

Example:
    >>> round(NERF_FINEST.cells_per_pixel * 206.7)  # the chair at 200 px
    1024
"""

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from recon.core.errors import ReconError
from recon.train.capacity import set_field

__all__ = [
    "NERF_FINEST",
    "NERF_SYNTHETIC_800_PX",
    "NEUS_FINEST",
    "SPARSEFLEX_COLOR_FINEST",
    "FootprintChoice",
    "FootprintRule",
    "apply_footprint",
    "choose_footprint",
    "pixels_across",
    "scene_kind",
]

NERF_SYNTHETIC_800_PX = 3.0 * 1111.111 / 4.0311
"""Pixels the NeRF-synthetic views at 800 px span across the +-1.5 box at its centre (focal 1111.1 px, cameras
4.031 from the centre): the data the published recipes' finest resolutions were set for."""


@dataclass(frozen=True)
class FootprintRule:
    """A resolution set from the training views' pixel footprint (see the module docstring).

    Attributes:
        field: dotted config field (``"scene.grid_max_resolution"``).
        unit: what the value counts, for messages.
        cells_per_pixel: cells per pixel the views span across the box.
        quantum: values are multiples of it.
        low: smallest value.
        high: largest value (the published recipe's).
        bounded_only: apply only when the scene is bounded (nerf's ``scene.scene_type`` resolves to ``bounded``).
    """

    field: str
    unit: str
    cells_per_pixel: float
    quantum: int
    low: int
    high: int
    bounded_only: bool = False

    def __post_init__(self) -> None:
        if not (self.cells_per_pixel > 0 and self.quantum > 0 and 0 < self.low <= self.high):
            raise ValueError(
                f"FootprintRule needs cells_per_pixel, quantum > 0 and 0 < low <= high, got {self}"
            )

    @property
    def sets(self) -> tuple[str, ...]:
        """The dotted fields the rule sets (``recon.train.capacity.explicit_fields``): its field."""
        return (self.field,)


NERF_FINEST = FootprintRule(
    field="scene.grid_max_resolution", unit="cells", cells_per_pixel=4096 / NERF_SYNTHETIC_800_PX, quantum=16,
    low=256, high=4096, bounded_only=True,
)  # fmt: skip
"""nerf: the finest hash-grid level, 4.95 cells per pixel (published: 4096 at 800 px; CPU preset: 1024 at 200 px),
at least 256 (16x the coarsest level)."""

NEUS_FINEST = FootprintRule(
    field="scene.grid_max_resolution", unit="cells", cells_per_pixel=2048 / NERF_SYNTHETIC_800_PX, quantum=16,
    low=128, high=2048,
)  # fmt: skip
"""NeuS: the finest hash-grid level, 2.48 cells per pixel (published: 2048 at 800 px; CPU preset: 512 at 200 px),
at least 128 (8x the coarsest level)."""


SPARSEFLEX_COLOR_FINEST = FootprintRule(
    field="scene.color_grid.max_resolution", unit="cells", cells_per_pixel=2048 / NERF_SYNTHETIC_800_PX, quantum=16,
    low=128, high=2048,
)  # fmt: skip
"""sparseflex: the finest level of the colour field's hash grid, by NeuS's ratio (published: 2048; CPU preset: 512
at 200 px)."""


@dataclass(frozen=True)
class FootprintChoice:
    """The rule's output for one field, with what it was computed from (recorded in ``capacity.json``)."""

    field: str
    value: int
    unit: str
    limited_by: Literal["footprint", "low", "high"]
    pixels_across: float
    cells_per_pixel: float

    def line(self) -> str:
        """``capacity: scene.grid_max_resolution 1,024 cells (the training views span 207 px across the box, ...)``"""
        return (
            f"capacity: {self.field} {self.value:,} {self.unit} (the training views span {self.pixels_across:.0f} px "
            f"across the box; {self.cells_per_pixel:.3g} cells per pixel; {self.limited_by}-limited)"
        )

    def record(self) -> dict:
        """Plain data for ``capacity.json``."""
        return asdict(self) | {"rule": "footprint"}


def pixels_across(cameras, box: torch.Tensor) -> float:
    """Median over ``cameras`` of the pixels the cube around ``box`` spans at its centre: ``L f / d``.

    Args:
        cameras: ``recon.core.Camera`` batch (``K`` at the loaded resolution; ``f = sqrt(fx fy)``).
        box: (2, 3) scene box (its cube: the side is the largest extent).

    Raises:
        ValueError: a camera sits at the box centre (no footprint there).
    """
    box = box.detach().to(torch.float64).cpu()
    side = float((box[1] - box[0]).max())
    centre = 0.5 * (box[0] + box[1])
    distances = (cameras.centers().detach().to(torch.float64).cpu() - centre).norm(dim=-1)
    K = cameras.K.detach().to(torch.float64).cpu()
    focal = (K[:, 0, 0] * K[:, 1, 1]).abs().sqrt()
    if not bool((distances > 1e-9 * max(side, 1e-9)).all()):
        raise ValueError("pixels_across: a training camera sits at the centre of the scene box")
    return statistics.median((side * focal / distances).tolist())


def choose_footprint(rule: FootprintRule, across: float) -> FootprintChoice:
    """The rule's value for views spanning ``across`` pixels of the box (a multiple of the quantum in bounds)."""
    if not (math.isfinite(across) and across > 0):
        raise ValueError(f"pixels across the box must be finite and > 0, got {across}")
    raw = rule.quantum * round(rule.cells_per_pixel * across / rule.quantum)
    value = min(max(raw, rule.low), rule.high)
    limited = "low" if raw < rule.low else "high" if raw > rule.high else "footprint"
    return FootprintChoice(rule.field, value, rule.unit, limited, across, rule.cells_per_pixel)


def apply_footprint(cfg, rules, dataset, *, explicit: frozenset[str] = frozenset()):
    """``cfg`` with each footprint rule's field set from ``dataset``'s training views, and the choices.

    Like ``recon.train.capacity.apply_capacity``: only under a time budget (``cfg.max_minutes > 0``) and only for
    fields the user did not set (``explicit``).

    Raises:
        ReconError: a training camera sits at the centre of the scene box (naming the dataset and the flag).
    """
    rules = [rule for rule in rules if rule.field not in explicit]
    if cfg.max_minutes <= 0 or not rules:
        return cfg, []
    cameras = dataset.cameras("train")
    choices = []
    across = None  # measured once, for the first rule that applies
    for rule in rules:
        if rule.bounded_only and scene_kind(cfg, dataset, cameras) != "bounded":
            continue
        if across is None:
            try:
                across = pixels_across(cameras, dataset.scene_box)
            except ValueError as exc:
                flag = "--" + rule.field.replace("_", "-")
                raise ReconError(f"dataset {dataset.root}: {exc}; set {flag} to train on it") from None
        choice = choose_footprint(rule, across)
        cfg = set_field(cfg, rule.field, choice.value)
        choices.append(choice)
    return cfg, choices


def scene_kind(cfg, dataset, cameras) -> str:
    """The kind of capture the scene will decide (``recon.scenes.scene_type``; ``bounded`` without a setting)."""
    from recon.scenes.scene_type import detect_scene_type

    setting = str(getattr(cfg.scene, "scene_type", "bounded"))
    return detect_scene_type(cameras, dataset.points3d).kind if setting == "auto" else setting
