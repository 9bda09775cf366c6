"""The learnable parameters of a blocks world as plain tensors (``BlockSet``) and their initialisation (spec 3).

The future ``SuperquadricScene`` registers these tensors as parameters; everything that does not render (losses,
export, curriculum) takes a ``BlockSet`` or its tensors, so it is testable without the rasteriser.
"""

import math
from dataclasses import dataclass, fields, replace
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from recon.core.transforms import random_rotations
from recon.scenes.superquadrics.geometry import (
    block_vertices,
    exponents_from_raw,
    matrix_to_rot6d,
    rot6d_to_matrix,
    scales_from_log,
    superquadric_points,
)

__all__ = ["GEOMETRY_FIELDS", "IDENTITY_ROT6D", "TEXTURE_FIELDS", "BlockSet", "init_block_set"]

IDENTITY_ROT6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
GEOMETRY_FIELDS = (
    "raw_exponents", "log_scales", "rot6d", "translations", "alpha_logits", "ground_rot6d", "ground_translation",
)  # fmt: skip
"""``BlockSet`` tensors optimised with ``lr_geometry`` (5e-3; spec 8)."""
TEXTURE_FIELDS = ("texture_logits", "ground_texture_logits", "background_texture_logits")
"""``BlockSet`` tensors optimised with ``lr_texture`` (5e-2; spec 8)."""
SCALE_INIT_OFFSET = 0.3  # S = exp(log(U + 0.3)) + 0.2 = U + 0.5 ∈ [0.5, 1.5) (spec 3)
ALPHA_LOGIT_OFFSET = 1e-3  # the reference stores logit(0.5) + 1e-3 (spec 3)
TEXTURE_INIT_STD = 0.1  # texture logits ~ N(0, 0.1²) (spec 3)


@dataclass(frozen=True)
class BlockSet:
    """Raw (unactivated) parameters of ``N`` blocks, the ground and the background.

    Attributes:
        raw_exponents: (N, 2) raw shape exponents; ``exponents()`` = 1.8·sigmoid + 0.1.
        log_scales: (N, 3) raw scales; ``scales()`` = exp + ``scale_min``.
        rot6d: (N, 6) rotations (Zhou et al. 6D, columns b1 b2).
        translations: (N, 3) block centres in the canonical frame.
        alpha_logits: (N,) opacity logits; ``opacities()`` = sigmoid.
        texture_logits: (N, T, T, 3) block texture logits (rows = v from 1 down to 0, columns = u), unpadded.
        ground_rot6d: (6,) ground rotation.
        ground_translation: (3,) ground offset.
        ground_texture_logits: (Tg, Tg, 3).
        background_texture_logits: (Tb, Tb, 3).
        scale_min: the constant added to ``exp(log_scales)``.
        ratio: block/scene ratio; local vertex = ``ratio·S ⊙ x_sq``.
    """

    raw_exponents: Float[Tensor, "N 2"]
    log_scales: Float[Tensor, "N 3"]
    rot6d: Float[Tensor, "N 6"]
    translations: Float[Tensor, "N 3"]
    alpha_logits: Float[Tensor, " N"]
    texture_logits: Float[Tensor, "N T T 3"]
    ground_rot6d: Float[Tensor, "6"]
    ground_translation: Float[Tensor, "3"]
    ground_texture_logits: Float[Tensor, "Tg Tg 3"]
    background_texture_logits: Float[Tensor, "Tb Tb 3"]
    scale_min: float = 0.2
    ratio: float = 0.25

    def __post_init__(self) -> None:
        n = self.raw_exponents.shape[0]
        expected = {
            "raw_exponents": (n, 2),
            "log_scales": (n, 3),
            "rot6d": (n, 6),
            "translations": (n, 3),
            "alpha_logits": (n,),
            "ground_rot6d": (6,),
            "ground_translation": (3,),
        }
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(
                    f"BlockSet.{name} must have shape {shape}, got {tuple(getattr(self, name).shape)}"
                )
        for name in ("texture_logits", "ground_texture_logits", "background_texture_logits"):
            t = getattr(self, name)
            lead = (n,) if name == "texture_logits" else ()
            if t.ndim != len(lead) + 3 or tuple(t.shape[: len(lead)]) != lead or t.shape[-1] != 3:
                raise ValueError(
                    f"BlockSet.{name} must have shape {lead + ('T', 'T', 3)}, got {tuple(t.shape)}"
                )

    def __len__(self) -> int:
        return self.raw_exponents.shape[0]

    def exponents(self) -> Float[Tensor, "N 2"]:
        return exponents_from_raw(self.raw_exponents)

    def scales(self) -> Float[Tensor, "N 3"]:
        return scales_from_log(self.log_scales, scale_min=self.scale_min)

    def rotations(self) -> Float[Tensor, "N 3 3"]:
        return rot6d_to_matrix(self.rot6d)

    def opacities(self) -> Float[Tensor, " N"]:
        return torch.sigmoid(self.alpha_logits)

    def ground_rotation(self) -> Float[Tensor, "3 3"]:
        return rot6d_to_matrix(self.ground_rot6d)

    def vertices(self, eta: Float[Tensor, " V"], omega: Float[Tensor, " V"]) -> Float[Tensor, "N V 3"]:
        """Canonical-frame block vertices at base angles ``(η, ω)``. Differentiable w.r.t. the block tensors."""
        unit = superquadric_points(eta, omega, self.exponents())
        return block_vertices(unit, self.scales(), self.rotations(), self.translations, ratio=self.ratio)

    def select(self, mask: Tensor) -> "BlockSet":
        """The blocks where ``mask`` (N,) is true; ground and background unchanged."""
        per_block = ("raw_exponents", "log_scales", "rot6d", "translations", "alpha_logits", "texture_logits")
        return replace(self, **{name: getattr(self, name)[mask] for name in per_block})

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "BlockSet":
        """A copy with every tensor moved to ``device`` / cast to ``dtype``."""
        tensors = {f.name: getattr(self, f.name) for f in fields(self) if f.type is not float}
        return replace(self, **{k: v.to(device=device, dtype=dtype) for k, v in tensors.items()})

    def detached(self) -> "BlockSet":
        """A copy with every tensor detached (for export and logging)."""
        return replace(
            self, **{f.name: getattr(self, f.name).detach() for f in fields(self) if f.type is not float}
        )


def init_block_set(
    n_blocks: int,
    *,
    generator: torch.Generator,
    texture_size: int = 256,
    translation_range: tuple[float, float, float] = (1.0, 1.0, 1.0),
    translation_init: Literal["gauss", "uniform"] = "gauss",
    opacity_init: float = 0.5,
    scale_min: float = 0.2,
    ratio: float = 0.25,
    ground_height: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> BlockSet:
    """Initial parameters exactly as spec 3, drawn on CPU from ``generator`` (move with ``.to`` afterwards).

    ``S ~ U[0.5, 1.5)³`` (stored ``log(U[0,1) + 0.3)``), ``R`` uniform (normalised Gaussian quaternion),
    ``t ~ N(0, 0.5²) ⊙ T_range`` (``gauss``) or ``U(−1, 1) ⊙ T_range`` (``uniform``), raw exponents 0 (spheres),
    ``α = opacity_init`` (stored ``logit(α) + 1e-3``), texture logits ``N(0, 0.1²)``, ground pose identity and
    ``(0, −0.9 T_range_y, 0)`` (or ``(0, ground_height, 0)`` when given).
    """
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
    if translation_init not in ("gauss", "uniform"):
        raise ValueError(f"translation_init must be 'gauss' or 'uniform', got {translation_init!r}")
    if not 0.0 < opacity_init < 1.0:
        raise ValueError(f"opacity_init must lie in (0, 1), got {opacity_init}")
    g, n, t_size = generator, n_blocks, texture_size
    t_range = torch.tensor(translation_range, dtype=dtype)
    log_scales = (torch.rand(n, 3, generator=g, dtype=dtype) + SCALE_INIT_OFFSET).log()
    rot6d = matrix_to_rot6d(random_rotations(n, generator=g, dtype=dtype))
    if translation_init == "gauss":
        translations = torch.randn(n, 3, generator=g, dtype=dtype) * 0.5 * t_range
    else:
        translations = (2 * torch.rand(n, 3, generator=g, dtype=dtype) - 1) * t_range
    logit = math.log(opacity_init / (1.0 - opacity_init)) + ALPHA_LOGIT_OFFSET
    ground_y = -0.9 * translation_range[1] if ground_height is None else ground_height
    return BlockSet(
        raw_exponents=torch.zeros(n, 2, dtype=dtype),
        log_scales=log_scales,
        rot6d=rot6d,
        translations=translations,
        alpha_logits=torch.full((n,), logit, dtype=dtype),
        texture_logits=torch.randn(n, t_size, t_size, 3, generator=g, dtype=dtype) * TEXTURE_INIT_STD,
        ground_rot6d=torch.tensor(IDENTITY_ROT6D, dtype=dtype),
        ground_translation=torch.tensor([0.0, ground_y, 0.0], dtype=dtype),
        ground_texture_logits=torch.randn(t_size, t_size, 3, generator=g, dtype=dtype) * TEXTURE_INIT_STD,
        background_texture_logits=torch.randn(t_size, t_size, 3, generator=g, dtype=dtype) * TEXTURE_INIT_STD,
        scale_min=scale_min,
        ratio=ratio,
    )
