"""Geometry metrics against a ground-truth surface: Chamfer distance and F-score, with the scale stated.

Meshes are compared through area-uniform surface samples; point sets are used as given. Nearest neighbours come
from ``scipy.spatial.cKDTree`` in float64. Distances are in the units of the inputs (compare both in one frame).
"""

import torch
from jaxtyping import Float
from scipy.spatial import cKDTree
from torch import Tensor

from recon.core import Mesh

DEFAULT_SAMPLES = 100_000  # surface samples per mesh: mean NN spacing ~ 0.3% of a unit object's size
DEFAULT_SEED = 0  # samples are drawn from a fixed seed unless a generator is passed (reproducible metrics)

Geometry = Mesh | Float[Tensor, "P 3"]


def sample_surface(mesh: Mesh, n: int, *, generator: torch.Generator | None = None) -> Float[Tensor, "n 3"]:
    """``n`` points uniformly distributed over the mesh surface (area-weighted faces, uniform barycentrics).

    .. math:: x = (1 - \\sqrt{r_1}) v_0 + \\sqrt{r_1} (1 - r_2) v_1 + \\sqrt{r_1} r_2 v_2

    Args:
        mesh: triangle mesh with at least one face of positive area.
        n: number of samples.
        generator: CPU torch generator (None: a fresh one seeded with DEFAULT_SEED).

    Returns:
        (n, 3) float64 points on the CPU.

    Differentiable w.r.t.: nothing.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(DEFAULT_SEED)
    vertices = mesh.vertices.detach().to("cpu", torch.float64)
    tri = vertices[mesh.faces.detach().to("cpu", torch.long)]  # (F, 3, 3)
    area = 0.5 * torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1)
    if tri.shape[0] == 0 or not bool(area.sum() > 0):
        raise ValueError("mesh has no face of positive area to sample")
    face = torch.multinomial(area, n, replacement=True, generator=generator)
    r = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    s = r[:, :1].sqrt()
    w = torch.cat([1 - s, s * (1 - r[:, 1:]), s * r[:, 1:]], dim=1)
    return (tri[face] * w[..., None]).sum(1)


def _points(x: Geometry, n: int, generator: torch.Generator, name: str) -> Tensor:
    if isinstance(x, Mesh):
        return sample_surface(x, n, generator=generator)
    if isinstance(x, Tensor):
        if x.ndim != 2 or x.shape[-1] != 3 or x.shape[0] == 0:
            raise ValueError(
                f"{name} must be a Mesh or a non-empty (P, 3) point tensor, got shape {tuple(x.shape)}"
            )
        return x.detach().to("cpu", torch.float64)
    raise TypeError(f"{name} must be a recon.core.Mesh or a (P, 3) tensor, got {type(x).__name__}")


def _nn_distances(pred: Geometry, gt: Geometry, num_samples: int, generator: torch.Generator | None):
    """(pred -> gt distances, gt -> pred distances, gt points) with nearest neighbours in float64."""
    if generator is None:
        generator = torch.Generator().manual_seed(DEFAULT_SEED)
    p = _points(pred, num_samples, generator, "pred").numpy()
    g = _points(gt, num_samples, generator, "gt").numpy()
    d_pg = torch.from_numpy(cKDTree(g).query(p, k=1)[0])
    d_gp = torch.from_numpy(cKDTree(p).query(g, k=1)[0])
    return d_pg, d_gp, g


def chamfer(
    pred: Geometry,
    gt: Geometry,
    *,
    num_samples: int = DEFAULT_SAMPLES,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Symmetric Chamfer distances between two surfaces (meshes are sampled, point sets used as given).

    With ``d(a, B) = min_b |a - b|``, accuracy terms go pred -> gt and completeness terms gt -> pred:

    .. math:: \\mathrm{L1} = \\tfrac12 \\big(\\overline{d(p, G)} + \\overline{d(g, P)}\\big), \\quad
              \\mathrm{L2} = \\tfrac12 \\big(\\overline{d(p, G)^2} + \\overline{d(g, P)^2}\\big)

    Args:
        pred: predicted Mesh or (P, 3) points.
        gt: ground-truth Mesh or (P, 3) points.
        num_samples: surface samples per mesh.
        generator: CPU generator for the samples (None: fixed seed DEFAULT_SEED).

    Returns:
        {"l1", "l2", "l1_pred_to_gt", "l1_gt_to_pred", "l2_pred_to_gt", "l2_gt_to_pred", "scale" (diagonal of
        the gt bounding box, the unit the normalised values use), "l1_over_diag" (l1 / scale), "l2_over_diag2"
        (l2 / scale^2)}; distances in the inputs' units.

    Differentiable w.r.t.: nothing (a metric).
    """
    d_pg, d_gp, g = _nn_distances(pred, gt, num_samples, generator)
    scale = float(torch.from_numpy(g.max(0) - g.min(0)).norm()) if not isinstance(gt, Mesh) else _diagonal(gt)
    out = {
        "l1_pred_to_gt": float(d_pg.mean()),
        "l1_gt_to_pred": float(d_gp.mean()),
        "l2_pred_to_gt": float((d_pg**2).mean()),
        "l2_gt_to_pred": float((d_gp**2).mean()),
    }
    out["l1"] = 0.5 * (out["l1_pred_to_gt"] + out["l1_gt_to_pred"])
    out["l2"] = 0.5 * (out["l2_pred_to_gt"] + out["l2_gt_to_pred"])
    out["scale"] = scale
    out["l1_over_diag"] = out["l1"] / scale if scale > 0 else float("nan")
    out["l2_over_diag2"] = out["l2"] / scale**2 if scale > 0 else float("nan")
    return out


def _diagonal(mesh: Mesh) -> float:
    """Bounding-box diagonal of the mesh's referenced vertices."""
    used = mesh.vertices.detach().to("cpu", torch.float64)[mesh.faces.detach().to("cpu", torch.long).unique()]
    return float((used.max(0).values - used.min(0).values).norm())


class FScore(float):
    """The F-score as a float, carrying its precision, recall and threshold.

    ``float(result)`` is the F-score; ``result["precision"]``, ``dict(result)`` and the attributes give the parts.
    """

    precision: float
    recall: float
    threshold: float

    def __new__(cls, fscore: float, *, precision: float, recall: float, threshold: float) -> "FScore":
        obj = super().__new__(cls, fscore)
        obj.precision, obj.recall, obj.threshold = precision, recall, threshold
        return obj

    @property
    def fscore(self) -> float:
        return float(self)

    def keys(self) -> tuple[str, ...]:
        return ("fscore", "precision", "recall", "threshold")

    def __getitem__(self, key: str) -> float:
        if key not in self.keys():
            raise KeyError(key)
        return float(getattr(self, key))

    def as_dict(self) -> dict[str, float]:
        return {k: self[k] for k in self.keys()}


def fscore(
    pred: Geometry,
    gt: Geometry,
    *,
    threshold: float,
    num_samples: int = DEFAULT_SAMPLES,
    generator: torch.Generator | None = None,
) -> FScore:
    """F-score at a distance threshold (Knapitsch et al. 2017, Tanks and Temples).

    .. math:: P = \\Pr_{p}[d(p, G) < \\tau], \\quad R = \\Pr_{g}[d(g, P) < \\tau], \\quad F = \\frac{2PR}{P + R}

    Args:
        pred: predicted Mesh or (P, 3) points.
        gt: ground-truth Mesh or (P, 3) points.
        threshold: ``tau`` in the inputs' units (state it with the result, e.g. 1% of the gt bbox diagonal).
        num_samples: surface samples per mesh.
        generator: CPU generator for the samples (None: fixed seed DEFAULT_SEED).

    Returns:
        An :class:`FScore`: a float (F, 0 when P + R = 0) with ``["precision"]``, ``["recall"]``,
        ``["threshold"]`` and ``["fscore"]``.

    Differentiable w.r.t.: nothing (a metric).
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    d_pg, d_gp, _ = _nn_distances(pred, gt, num_samples, generator)
    precision = float((d_pg < threshold).double().mean())
    recall = float((d_gp < threshold).double().mean())
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return FScore(f, precision=precision, recall=recall, threshold=float(threshold))
