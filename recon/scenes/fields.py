"""Neural fields shared by the volume-rendered scenes (spec neural_fields.md §2, §5).

* ``MLP``: plain fully connected network (bias-free by default, as tiny-cuda-nn's fused MLPs).
* ``NGPField``: Instant-NGP density + colour field on a hash grid (spec §2).
* ``SDFField``: hash-grid signed-distance field with geometric (sphere) initialisation and weight normalisation,
  plus its colour network and the learnable NeuS sharpness ``s = exp(10 v)`` (spec §5, fast variant).

Positions are world points inside a cube ``aabb`` (the scene box forced to a cube, ``cube_box``); the encodings
see them normalised to ``[0, 1]^3``.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from torch.nn.utils import parametrizations

from recon.core.shapes import Backend
from recon.renderers._backend import torch_only
from recon.renderers.encoding import HashGrid, HashGridConfig, spherical_harmonics, trunc_exp

__all__ = [
    "MLP",
    "DensityOutput",
    "NGPField",
    "SDFField",
    "SDFOutput",
    "cube_box",
    "normalize_to_box",
    "unit_normals",
]

DENSITY_BIAS = -1.0  # sigma = trunc_exp(logit - 1) (spec §2, nerfacc examples/radiance_fields/ngp.py)
SOFTPLUS_BETA = (
    100.0  # SDF MLP activation softplus(100 x): smooth ReLU with a defined second derivative (IDR)
)
VARIANCE_SCALE = 10.0  # NeuS sharpness s = exp(10 v) (spec §5)
INV_S_RANGE = (1e-6, 1e6)  # clamp of s (NeuS models/fields.py SingleVarianceNetwork + renderer clip)
DOUBLE_BACKWARD_REASON = (
    "the eikonal term needs the double backward of the hash grid, and the Warp encoding is first-order only"
)
GRAD_EPS = 1e-12  # floor of |grad f| when normalising SDF gradients into normals


def cube_box(box: Float[Tensor, "2 3"]) -> Float[Tensor, "2 3"]:
    """The smallest cube with the same centre containing ``box`` (spec §2: the AABB is forced to a cube)."""
    center = 0.5 * (box[0] + box[1])
    half = 0.5 * (box[1] - box[0]).max()
    return torch.stack([center - half, center + half])


def normalize_to_box(x: Float[Tensor, "N 3"], aabb: Float[Tensor, "2 3"]) -> Float[Tensor, "N 3"]:
    """``(x - min) / (max - min)``: the box maps to ``[0, 1]^3``. Differentiable w.r.t. ``x``."""
    return (x - aabb[0]) / (aabb[1] - aabb[0])


class MLP(nn.Module):
    """``Linear -> act -> ... -> Linear`` with ``hidden_layers`` hidden layers of ``hidden_dim`` (ReLU).

    Args:
        in_dim, out_dim: input and output widths.
        hidden_dim: width of every hidden layer.
        hidden_layers: number of hidden layers (>= 0).
        bias: use biases (tiny-cuda-nn's fused MLPs have none; spec §2 asks ``bias=False`` for parity).

    Example:
        >>> MLP(4, 2, hidden_dim=8, hidden_layers=1)(torch.zeros(3, 4)).shape
        torch.Size([3, 2])
    """

    def __init__(self, in_dim: int, out_dim: int, *, hidden_dim: int, hidden_layers: int, bias: bool = False):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * hidden_layers + [out_dim]
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=bias) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )

    def forward(self, x: Float[Tensor, "N I"]) -> Float[Tensor, "N O"]:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class _HashGridField(nn.Module):
    """Base of the hash-grid fields: the cube ``aabb`` (buffer) and the hash-grid ``encoding``."""

    aabb: Float[Tensor, "2 3"]

    # Buffers (registered in __init__), declared so that static type checkers know they are tensors.
    aabb: Tensor

    def __init__(
        self, aabb: Float[Tensor, "2 3"], *, grid: HashGridConfig, generator: torch.Generator | None
    ) -> None:
        super().__init__()
        self.register_buffer("aabb", aabb.detach().clone().float())
        self.encoding = HashGrid(grid, generator=generator)


@dataclass(frozen=True)
class DensityOutput:
    """Density field evaluation: ``sigmas`` (N,) >= 0 and ``geometry`` (N, G) features for the colour MLP."""

    sigmas: Float[Tensor, " N"]
    geometry: Float[Tensor, "N G"]


class NGPField(_HashGridField):
    """Instant-NGP radiance field (spec §2).

    Density: ``hash(x) (L F) -> 64 (ReLU) -> 1 + G`` with ``sigma = trunc_exp(logit - 1)``, zero outside the
    box. Colour: ``[SH_4(d) (16), geometry (G)] -> 64 -> 64 -> 3 -> sigmoid``.

    Args:
        aabb: (2, 3) cube the hash grid covers (world units).
        grid: hash-grid hyper-parameters.
        hidden_dim: width of the hidden layers.
        geometry_dim: geometry features passed to the colour MLP (15 in the spec).
        color_hidden_layers: hidden layers of the colour MLP (2 in the spec).
        generator: RNG of the initialisation.

    Example:
        >>> f = NGPField(torch.tensor([[-1.0] * 3, [1.0] * 3]), grid=HashGridConfig(levels=2, log2_hashmap_size=8))
        >>> f.density(torch.zeros(4, 3), backend="torch").sigmas.shape
        torch.Size([4])
    """

    def __init__(
        self,
        aabb: Float[Tensor, "2 3"],
        *,
        grid: HashGridConfig,
        hidden_dim: int = 64,
        geometry_dim: int = 15,
        color_hidden_layers: int = 2,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(aabb, grid=grid, generator=generator)
        self.density_mlp = MLP(
            self.encoding.output_dim, 1 + geometry_dim, hidden_dim=hidden_dim, hidden_layers=1
        )
        self.color_mlp = MLP(16 + geometry_dim, 3, hidden_dim=hidden_dim, hidden_layers=color_hidden_layers)
        if generator is not None:
            _init_linear(self, generator)

    def density(self, x: Float[Tensor, "N 3"], *, backend: Backend = "auto") -> DensityOutput:
        """Density and geometry features at world points ``x``.

        Differentiable w.r.t.: the hash table and MLP weights (and ``x`` through the encoding).
        """
        u = normalize_to_box(x, self.aabb)
        inside = ((u > 0.0) & (u < 1.0)).all(-1)
        h = self.density_mlp(self.encoding(u.clamp(0.0, 1.0), backend=backend))
        sigmas = trunc_exp(h[:, 0] + DENSITY_BIAS) * inside.to(h.dtype)
        return DensityOutput(sigmas=sigmas, geometry=h[:, 1:])

    def color(self, directions: Float[Tensor, "N 3"], geometry: Float[Tensor, "N G"]) -> Float[Tensor, "N 3"]:
        """RGB in (0, 1) seen along unit ``directions`` (ray directions, pointing away from the camera)."""
        return torch.sigmoid(self.color_mlp(torch.cat([spherical_harmonics(directions), geometry], -1)))


@dataclass(frozen=True)
class SDFOutput:
    """SDF field evaluation at N points.

    Attributes:
        sdf: (N,) signed distance in world units (negative inside).
        features: (N, G) features for the colour network.
        gradients: (N, 3) ``grad_x sdf`` (world units), or None when not requested.
    """

    sdf: Float[Tensor, " N"]
    features: Float[Tensor, "N G"]
    gradients: Float[Tensor, "N 3"] | None


class SDFField(_HashGridField):
    """Hash-grid SDF with sphere initialisation (spec §5 fast variant, instant-nsr-pl ``VolumeSDF``).

    Input ``[y, hash((y + 1) / 2)]`` with ``y in [-1, 1]^3`` the cube-normalised position; one hidden layer
    (softplus, beta 100), weight normalisation; output ``1 + G``. The network value ``f(y)`` is in normalised units;
    the SDF in world units is ``h f(y)`` with ``h`` the cube's half size, so ``|grad_x sdf| = |grad_y f|``.

    Geometric initialisation (IDR / Atzmon & Lipman): first-layer weights on ``y`` ~ N(0, 2 / width), zero on the
    hash features; last layer ~ N(sqrt(pi) / sqrt(width), 1e-4) with bias ``-radius``, giving
    ``f(y) ~ |y| - radius`` (a sphere of radius ``radius * h`` about the cube centre).

    Colour network (IDR mode of the fast variant): ``[features, normal, SH_4(d)] -> 64 -> 64 -> 3 -> sigmoid``.

    Args:
        aabb: (2, 3) cube (world units).
        grid: hash-grid hyper-parameters.
        hidden_dim: SDF MLP width.
        feature_dim: features passed to the colour network (13 in instant-nsr-pl).
        color_hidden_dim, color_hidden_layers: width and depth of the colour MLP (64, 2).
        init_radius: sphere radius of the initialisation in normalised units (0.5).
        init_variance: initial ``v`` (s = exp(10 v); 0.3 gives s ~ 20).
        generator: RNG of the initialisation.
    """

    def __init__(
        self,
        aabb: Float[Tensor, "2 3"],
        *,
        grid: HashGridConfig,
        hidden_dim: int = 64,
        feature_dim: int = 13,
        color_hidden_dim: int = 64,
        color_hidden_layers: int = 2,
        init_radius: float = 0.5,
        init_variance: float = 0.3,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(aabb, grid=grid, generator=generator)
        in_dim = 3 + self.encoding.output_dim
        first = nn.Linear(in_dim, hidden_dim)
        last = nn.Linear(hidden_dim, 1 + feature_dim)
        with torch.no_grad():
            first.weight.zero_()
            first.weight[:, :3].normal_(0.0, math.sqrt(2.0) / math.sqrt(hidden_dim), generator=generator)
            first.bias.zero_()
            last.weight.normal_(math.sqrt(math.pi) / math.sqrt(hidden_dim), 1e-4, generator=generator)
            last.bias.fill_(-init_radius)
        self.sdf_layers = nn.ModuleList(
            [parametrizations.weight_norm(first), parametrizations.weight_norm(last)]
        )
        self.color_mlp = MLP(
            feature_dim + 3 + 16, 3, hidden_dim=color_hidden_dim, hidden_layers=color_hidden_layers
        )
        if generator is not None:
            _init_linear(self.color_mlp, generator)
        self.variance = nn.Parameter(torch.tensor(float(init_variance)))

    def half_size(self) -> Tensor:
        """Half the cube's edge length ``h`` (world units per normalised unit)."""
        return 0.5 * (self.aabb[1, 0] - self.aabb[0, 0])

    def inv_s(self) -> Tensor:
        """NeuS sharpness ``s = exp(10 v)`` (clamped to [1e-6, 1e6])."""
        return torch.exp(self.variance * VARIANCE_SCALE).clamp(*INV_S_RANGE)

    def _forward(self, x: Tensor, backend: Backend) -> Tensor:
        center = 0.5 * (self.aabb[0] + self.aabb[1])
        y = (x - center) / self.half_size()
        feats = self.encoding(((y + 1.0) * 0.5).clamp(0.0, 1.0), backend=backend)
        h = F.softplus(self.sdf_layers[0](torch.cat([y, feats], -1)), beta=SOFTPLUS_BETA)
        out = self.sdf_layers[1](h)
        return torch.cat([out[:, :1] * self.half_size(), out[:, 1:]], -1)

    def sdf(self, x: Float[Tensor, "N 3"], *, backend: Backend = "auto") -> Float[Tensor, " N"]:
        """Signed distance (world units) at world points ``x``. Differentiable w.r.t. weights and ``x``."""
        return self._forward(x, backend)[:, 0]

    def evaluate(
        self, x: Float[Tensor, "N 3"], *, with_gradients: bool = True, create_graph: bool = False,
        backend: Backend = "auto",
    ) -> SDFOutput:  # fmt: skip
        """SDF, features and (optionally) the analytic gradient ``grad_x sdf``.

        With ``create_graph`` the gradient stays differentiable (eikonal loss, normals in training); the hash grid
        then runs on the torch reference, because the eikonal term needs the double backward (the gradient, w.r.t.
        the table, of the SDF's gradient w.r.t. x) and the Warp encoding is first-order only. This is recorded and
        logged as a WARNING once per run (``recon.renderers._backend.torch_only``); every other op of a NeuS render
        (occupancy marching, compositing) and every render without ``create_graph`` (evaluation, export, the
        viewer) uses Warp.

        Differentiable w.r.t.: the field parameters (and, with ``create_graph``, through ``gradients``).
        """
        if not with_gradients:
            out = self._forward(x, backend)
            return SDFOutput(out[:, 0], out[:, 1:], None)
        grad_enabled = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            out = self._forward(xg, torch_only(backend, op="encoding.hash_grid", reason=DOUBLE_BACKWARD_REASON)
                                if create_graph else backend)  # fmt: skip
            (grad,) = torch.autograd.grad(out[:, 0].sum(), xg, create_graph=create_graph)
        if not grad_enabled:
            out, grad = out.detach(), grad.detach()
        return SDFOutput(out[:, 0], out[:, 1:], grad)

    def color(
        self, directions: Float[Tensor, "N 3"], normals: Float[Tensor, "N 3"], features: Float[Tensor, "N G"]
    ) -> Float[Tensor, "N 3"]:
        """RGB in (0, 1) from features, unit normals and unit ray directions."""
        return torch.sigmoid(
            self.color_mlp(torch.cat([features, normals, spherical_harmonics(directions)], -1))
        )


def unit_normals(gradients: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
    """``grad f / |grad f|`` (zero gradients stay zero)."""
    return gradients / gradients.norm(dim=-1, keepdim=True).clamp_min(GRAD_EPS)


def _init_linear(module: nn.Module, generator: torch.Generator) -> None:
    """Uniform init with variance ``1 / fan_in`` of every ``nn.Linear`` weight, drawn from ``generator``."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                m.weight.copy_(
                    (torch.rand(m.weight.shape, generator=generator) * 2.0 - 1.0) * bound * math.sqrt(3)
                )
                if m.bias is not None:
                    m.bias.zero_()
