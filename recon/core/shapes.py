"""Shared jaxtyping aliases and small type names used across recon."""

from typing import Literal

from jaxtyping import Float, Int
from torch import Tensor

Backend = Literal["auto", "torch", "warp"]

Mat4 = Float[Tensor, "*batch 4 4"]
Mat3 = Float[Tensor, "*batch 3 3"]
Vec3 = Float[Tensor, "*batch 3"]
Points = Float[Tensor, "*batch N 3"]
Image = Float[Tensor, "*batch H W D"]
Pixels = Float[Tensor, "*batch R 2"]
IntPixels = Int[Tensor, "*batch R 2"]

__all__ = [
    "Backend",
    "Float",
    "Image",
    "Int",
    "IntPixels",
    "Mat3",
    "Mat4",
    "Pixels",
    "Points",
    "Tensor",
    "Vec3",
]
