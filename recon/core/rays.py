"""Ray bundles."""

from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor


@dataclass(frozen=True)
class Rays:
    """World-space rays ``x(t) = origins + t * directions`` with unit ``directions``.

    Attributes:
        origins: (*batch, 3) ray origins.
        directions: (*batch, 3) unit directions.
    """

    origins: Float[Tensor, "*batch 3"]
    directions: Float[Tensor, "*batch 3"]

    def __post_init__(self) -> None:
        if self.origins.shape != self.directions.shape or self.origins.shape[-1] != 3:
            raise ValueError(
                f"Rays.origins and Rays.directions must share shape (*batch, 3), got "
                f"{tuple(self.origins.shape)} and {tuple(self.directions.shape)}"
            )

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.origins.shape[:-1])

    def reshape(self, *shape: int) -> "Rays":
        return Rays(self.origins.reshape(*shape, 3), self.directions.reshape(*shape, 3))

    def __getitem__(self, index) -> "Rays":
        return Rays(self.origins[index], self.directions[index])
