"""Fields and sampler of ``nerf`` for unbounded and forward-facing captures (spec neural_fields.md §2, §3).

* ``ContractedNGPField``: the Instant-NGP field of ``recon.scenes.fields.NGPField`` on contracted coordinates
  (``contract_to_unisphere``): every point of space has a density, nothing is forced empty outside the box.
* ``ProposalDensityField``: a small hash grid (``L = 5``, ``T = 2^17``, ``N_max`` 128 / 256) and one hidden layer of
  64 giving ``sigma = trunc_exp(logit - 1)`` on the same contracted coordinates (nerfacc ``NGPDensityField``).
* ``ProposalNetworks``: the proposal fields, sampling rays through ``recon.renderers.volume.proposal``.

Forward-facing (LLFF) captures use the same contraction instead of NDC: the foreground box
(``recon.scenes.scene_type.foreground_box``) spans the cameras to twice the median depth and everything beyond,
up to infinity, is contracted; NDC would need the near plane of the data and cannot be un-contracted for export.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from jaxtyping import Float
from torch import Tensor, nn

from recon.core.shapes import Backend
from recon.renderers.encoding import HashGrid, HashGridConfig, trunc_exp
from recon.renderers.encoding.contraction import ContractionNorm, contract_to_unisphere
from recon.renderers.volume.api import Spacing
from recon.renderers.volume.proposal import ProposalSamples, proposal_sampling
from recon.scenes.fields import DENSITY_BIAS, MLP, DensityOutput, NGPField, _init_linear

__all__ = [
    "ContractedNGPField",
    "ProposalConfig",
    "ProposalDensityField",
    "ProposalNetworks",
    "near_camera_gradient_scale",
    "scale_gradients",
]


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by a per-row ``scale``."""

    @staticmethod
    def forward(ctx, value: Tensor, scale: Tensor) -> Tensor:
        ctx.save_for_backward(scale)
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (scale,) = ctx.saved_tensors
        return grad * scale.reshape(scale.shape + (1,) * (grad.dim() - scale.dim())), None


def scale_gradients(value: Float[Tensor, "N ..."], scale: Float[Tensor, " N"]) -> Float[Tensor, "N ..."]:
    """``value`` unchanged, but the gradient flowing back through row ``i`` is multiplied by ``scale[i]``.

    Differentiable w.r.t.: ``value`` (scaled gradient); ``scale`` gets none.
    """
    return cast(Tensor, _ScaleGradient.apply(value, scale.detach()))


def near_camera_gradient_scale(t_mid: Float[Tensor, " N"], distance: float | Tensor) -> Float[Tensor, " N"]:
    """``min(1, (t / distance)^2)`` of samples at ray distance ``t_mid`` (Philip & Deschaintre 2023, "Floaters
    No More"; nerfstudio's ``use_gradient_scaling``).

    A pixel's rays cover a volume that shrinks as ``t^2`` towards the camera, so the few samples close to a
    training camera get as much gradient as the many far away and grow floaters that explain that one view; scaling
    their gradients by ``t^2`` evens it out. ``distance`` (> 0; a float, checked, or a 0-d tensor, not read back to
    the host) is where the scaling ends.
    """
    if not isinstance(distance, Tensor) and distance <= 0:
        raise ValueError(f"distance must be > 0, got {distance}")
    return (t_mid.detach() / distance).square().clamp(max=1.0)


class ContractedNGPField(NGPField):
    """``NGPField`` whose hash grid encodes contracted positions (all of space maps into ``[0, 1]^3``).

    Args:
        aabb: (2, 3) cube kept un-contracted (the foreground).
        norm: norm of the contraction (``"linf"``: the whole cube is un-contracted).
        **kwargs: the keyword arguments of ``NGPField``.
    """

    def __init__(self, aabb: Float[Tensor, "2 3"], *, norm: ContractionNorm = "linf", **kwargs) -> None:
        super().__init__(aabb, **kwargs)
        self.norm: ContractionNorm = norm

    def density(self, x: Float[Tensor, "N 3"], *, backend: Backend = "auto") -> DensityOutput:
        """Density and geometry features at world points ``x`` (any position).

        Differentiable w.r.t.: the hash table and MLP weights (and ``x``).
        """
        u = contract_to_unisphere(x, self.aabb, norm=self.norm)
        h = self.density_mlp(self.encoding(u.clamp(0.0, 1.0), backend=backend))
        return DensityOutput(sigmas=trunc_exp(h[:, 0] + DENSITY_BIAS), geometry=h[:, 1:])


class ProposalDensityField(nn.Module):
    """Density-only proposal field: ``hash(contract(x)) -> 64 (ReLU) -> 1``, ``sigma = trunc_exp(logit - 1)``.

    Args:
        aabb: (2, 3) cube of the contraction.
        grid: hash-grid hyper-parameters (spec: ``L = 5``, ``T = 2^17``, ``N_min = 16``, ``N_max`` 128 or 256).
        hidden_dim: width of the hidden layer.
        norm: norm of the contraction.
        generator: RNG of the initialisation.
    """

    aabb: Float[Tensor, "2 3"]

    # Buffers (registered in __init__), declared so that static type checkers know they are tensors.
    aabb: Tensor

    def __init__(
        self, aabb: Float[Tensor, "2 3"], *, grid: HashGridConfig, hidden_dim: int = 64,
        norm: ContractionNorm = "linf", generator: torch.Generator | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.register_buffer("aabb", aabb.detach().clone().float())
        self.norm: ContractionNorm = norm
        self.encoding = HashGrid(grid, generator=generator)
        self.mlp = MLP(self.encoding.output_dim, 1, hidden_dim=hidden_dim, hidden_layers=1)
        if generator is not None:
            _init_linear(self.mlp, generator)

    def forward(self, x: Float[Tensor, "N 3"], *, backend: Backend = "auto") -> Float[Tensor, " N"]:
        """``sigma >= 0`` at world points. Differentiable w.r.t.: the field's parameters."""
        u = contract_to_unisphere(x, self.aabb, norm=self.norm)
        return trunc_exp(self.mlp(self.encoding(u.clamp(0.0, 1.0), backend=backend))[:, 0] + DENSITY_BIAS)


@dataclass(frozen=True)
class ProposalConfig:
    """What ``ProposalNetworks`` needs (built from ``NerfSceneConfig``)."""

    proposal_samples: tuple[int, ...]
    num_samples: int
    max_resolutions: tuple[int, ...]
    grid_levels: int
    grid_log2_size: int
    hidden_dim: int
    near: float
    far: float
    spacing: Spacing
    norm: ContractionNorm


class ProposalNetworks(nn.Module):
    """The proposal density fields of a contracted scene and the sampling of rays through them (spec §3).

    ``near`` and ``far`` are in units of the foreground cube's half size (nerfacc's 360 recipe: near 0.2 and
    far 1e3 with an AABB of half size 1).

    Args:
        aabb: (2, 3) foreground cube.
        config: counts, grids and ray bounds.
        generator: RNG of the initialisation.
    """

    def __init__(
        self, aabb: Float[Tensor, "2 3"], config: ProposalConfig, *, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        if not config.proposal_samples:
            raise ValueError("proposal_samples must name at least one proposal level, e.g. (256, 96)")
        if len(config.max_resolutions) != len(config.proposal_samples):
            raise ValueError(
                f"proposal_max_resolutions {config.max_resolutions} must have one entry per proposal level "
                f"{config.proposal_samples}"
            )
        self.config = config
        self.fields = nn.ModuleList(
            ProposalDensityField(
                aabb,
                grid=HashGridConfig(
                    levels=config.grid_levels, log2_hashmap_size=config.grid_log2_size, max_resolution=res
                ),
                hidden_dim=config.hidden_dim,
                norm=config.norm,
                generator=generator,
            )  # fmt: skip
            for res in config.max_resolutions
        )

    def sample(
        self, origins: Float[Tensor, "R 3"], directions: Float[Tensor, "R 3"], *, stratified: bool,
        generator: torch.Generator | None, requires_grad: bool, backend: Backend, anneal: float = 1.0,
    ) -> ProposalSamples:  # fmt: skip
        """Final intervals of the rays ``origins + t directions`` (unit directions); ``anneal`` is the exponent
        of the proposal weights when resampling (``recon.renderers.volume.proposal.proposal_sampling``)."""
        cfg = self.config
        fields = cast(list[ProposalDensityField], list(self.fields))  # nn.ModuleList items are typed Module
        aabb = fields[0].aabb  # the stored box (restored by checkpoint loading)
        half_size = (0.5 * (aabb[1, 0] - aabb[0, 0])).to(origins)
        near = torch.ones_like(origins[:, 0]) * (cfg.near * half_size)
        far = torch.ones_like(origins[:, 0]) * (cfg.far * half_size)
        return proposal_sampling(
            [self._density_fn(f, origins, directions, backend) for f in fields],
            num_proposal_samples=cfg.proposal_samples, num_samples=cfg.num_samples, near=near, far=far,
            spacing=cfg.spacing, stratified=stratified, generator=generator, requires_grad=requires_grad,
            anneal=anneal, backend=backend,
        )  # fmt: skip

    @staticmethod
    def _density_fn(field: ProposalDensityField, origins: Tensor, directions: Tensor, backend: Backend):
        def density_fn(t_starts: Tensor, t_ends: Tensor) -> Tensor:
            t_mid = (t_starts + t_ends) * 0.5
            x = origins[:, None, :] + directions[:, None, :] * t_mid[..., None]
            return field(x.reshape(-1, 3), backend=backend).reshape(t_mid.shape)

        return density_fn


def proposal_config(
    *, proposal_samples: Sequence[int], num_samples: int, max_resolutions: Sequence[int], grid_levels: int,
    grid_log2_size: int, hidden_dim: int, near: float, far: float, spacing: Spacing, norm: ContractionNorm,
) -> ProposalConfig:  # fmt: skip
    """A ``ProposalConfig`` with tuples (YAML gives lists)."""
    return ProposalConfig(tuple(proposal_samples), num_samples, tuple(max_resolutions), grid_levels,
                          grid_log2_size, hidden_dim, near, far, spacing, norm)  # fmt: skip
