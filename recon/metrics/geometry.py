"""Geometry metrics against a ground-truth surface: Chamfer distance, F-score and normal consistency.

Sampled metrics (``chamfer``, ``fscore``) compare area-uniform surface samples (point sets as given) through
nearest neighbours from ``scipy.spatial.cKDTree`` in float64. Exact metrics (``surface_distance``,
``exact_chamfer``, ``mesh_metrics``) measure each sample's distance to the other *surface* (closest point on its
triangles, Open3D ``RaycastingScene``), so they have no sampling floor. Distances are in the units of the inputs
(compare both in one frame).
"""

import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from scipy.spatial import cKDTree  # pyright: ignore[reportAttributeAccessIssue]  # compiled module: invisible to pyright
from torch import Tensor

from recon.core import Mesh

DEFAULT_SAMPLES = 100_000  # surface samples per mesh: mean NN spacing ~ 0.3% of a unit object's size
DEFAULT_SEED = 0  # samples are drawn from a fixed seed unless a generator is passed (reproducible metrics)

Geometry = Mesh | Float[Tensor, "_points 3"]  # "_": pred and gt may hold different point counts


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
    return _sample_with_faces(mesh, n, generator)[0]


def _sample_with_faces(mesh: Mesh, n: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """(n, 3) float64 area-uniform samples and the (n,) index of the face each lies on."""
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
    return (tri[face] * w[..., None]).sum(1), face


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
    p = _points(pred, num_samples, generator, "pred")
    g = _points(gt, num_samples, generator, "gt")
    d_pg, d_gp = _kd_distances(p, g)
    return d_pg, d_gp, g.numpy()


def _kd_distances(p: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest-neighbour distances (float64) pred samples -> gt samples and gt samples -> pred samples."""
    p_np, g_np = p.numpy(), g.numpy()
    return torch.from_numpy(cKDTree(g_np).query(p_np, k=1)[0]), torch.from_numpy(
        cKDTree(p_np).query(g_np, k=1)[0]
    )


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
    return _distance_summary(d_pg, d_gp, scale)


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


DEFAULT_THRESHOLDS = (0.005, 0.01)  # F-score thresholds of mesh_metrics, as fractions of the gt bbox diagonal
# Open3D's RaycastingScene is float32. Both meshes are centred on the gt bounding box first, so a closest point is
# off by a few float32 ulps of coordinates no larger than the diagonal: exact distances carry an absolute error
# below EXACT_DISTANCE_TOLERANCE * (diagonal + distance) (measured: a mesh against itself gives < 1e-7).
EXACT_DISTANCE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class SurfaceDistance:
    """Closest points of query points on a triangle mesh (all float64 on the CPU).

    ``faces[p] = f`` means the closest surface point of query ``p`` lies on face ``f`` of the mesh.
    """

    distances: Float[Tensor, " P"]
    closest: Float[Tensor, "P 3"]
    normals: Float[Tensor, "P 3"]  # unit normal of the face holding the closest point (right-hand rule)
    faces: Int[Tensor, " P"]


def _unit_face_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    tri = vertices[faces]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return n / n.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)


def surface_distance(
    points: Float[Tensor, "P 3"], mesh: Mesh, *, center: Float[Tensor, " 3"] | None = None
) -> SurfaceDistance:
    """Distance from each point to the closest point on the mesh's triangles (not to its vertices or samples).

    .. math:: d(p, M) = \\min_{x \\in M} \\lVert p - x \\rVert, \\quad M = \\bigcup_f \\triangle_f

    Faces of zero area are ignored (they add no surface). Closest points come from Open3D's
    ``RaycastingScene.compute_closest_points`` (Embree, float32) on coordinates centred at ``center``; the distance
    is then taken in float64 (error below ``EXACT_DISTANCE_TOLERANCE`` times the extent, see there).

    Args:
        points: (P, 3) query points.
        mesh: the surface, open or closed.
        center: (3,) origin subtracted before the float32 query (None: the centre of the mesh's bounding box).

    Returns:
        A :class:`SurfaceDistance` (distances, closest points, face normals, face indices).

    Differentiable w.r.t.: nothing (a metric).

    Example:
        >>> tri = Mesh(torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]), torch.tensor([[0, 1, 2]]))
        >>> surface_distance(torch.tensor([[0.2, 0.2, 0.5], [2.0, 0.0, 0.0]]), tri).distances
        tensor([0.5000, 1.0000], dtype=torch.float64)
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a recon.core.Mesh, got {type(mesh).__name__}")
    if not isinstance(points, Tensor) or points.ndim != 2 or points.shape[-1] != 3 or points.shape[0] == 0:
        raise ValueError(
            f"points must be a non-empty (P, 3) tensor, got {getattr(points, 'shape', points)!r}"
        )
    import open3d as o3d  # lazy: importing recon.metrics stays cheap

    query = points.detach().to("cpu", torch.float64)
    vertices = mesh.vertices.detach().to("cpu", torch.float64)
    faces = mesh.faces.detach().to("cpu", torch.long)
    tri = vertices[faces]
    kept = torch.nonzero(torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1) > 0)[
        :, 0
    ]
    if kept.numel() == 0:
        raise ValueError("mesh has no face of positive area: it has no surface to measure distances to")
    if center is None:
        used = tri[kept].reshape(-1, 3)
        center = 0.5 * (used.min(0).values + used.max(0).values)
    center = center.detach().to("cpu", torch.float64)
    scene = o3d.t.geometry.RaycastingScene()
    # The ignores: open3d's stubs omit the ndarray constructor of o3d.core.Tensor.
    vertices_o3d = o3d.core.Tensor((vertices - center).float().numpy())  # pyright: ignore[reportCallIssue]
    faces_o3d = o3d.core.Tensor(faces[kept].numpy().astype(np.uint32))  # pyright: ignore[reportCallIssue]
    scene.add_triangles(vertices_o3d, faces_o3d)
    query_o3d = o3d.core.Tensor((query - center).float().numpy())  # pyright: ignore[reportCallIssue]
    result = scene.compute_closest_points(query_o3d)
    closest = torch.from_numpy(result["points"].numpy()).double() + center
    face = kept[torch.from_numpy(result["primitive_ids"].numpy().astype(np.int64))]
    normals = _unit_face_normals(vertices, faces)[face]
    return SurfaceDistance((query - closest).norm(dim=-1), closest, normals, face)


def _require_mesh(x: object, name: str) -> Mesh:
    if not isinstance(x, Mesh):
        raise TypeError(
            f"{name} must be a recon.core.Mesh (exact metrics need a surface), got {type(x).__name__}"
        )
    return x


@dataclass(frozen=True)
class _Directions:
    """Samples of both meshes and their exact distances to the other surface (pred first, then gt)."""

    pred_samples: Tensor
    gt_samples: Tensor
    pred_to_gt: SurfaceDistance
    gt_to_pred: SurfaceDistance
    pred_normals: Tensor  # unit normal of the face each pred sample lies on
    gt_normals: Tensor


def _exact_directions(
    pred: Mesh, gt: Mesh, num_samples: int, generator: torch.Generator | None
) -> _Directions:
    if generator is None:
        generator = torch.Generator().manual_seed(DEFAULT_SEED)
    p, p_face = _sample_with_faces(pred, num_samples, generator)
    g, g_face = _sample_with_faces(gt, num_samples, generator)
    center = 0.5 * (g.min(0).values + g.max(0).values)
    pv, gv = (m.vertices.detach().to("cpu", torch.float64) for m in (pred, gt))
    pf, gf = (m.faces.detach().to("cpu", torch.long) for m in (pred, gt))
    return _Directions(
        p,
        g,
        surface_distance(p, gt, center=center),
        surface_distance(g, pred, center=center),
        _unit_face_normals(pv, pf)[p_face],
        _unit_face_normals(gv, gf)[g_face],
    )


def _distance_summary(d_pg: Tensor, d_gp: Tensor, scale: float) -> dict[str, float]:
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


def exact_chamfer(
    pred: Mesh, gt: Mesh, *, num_samples: int = DEFAULT_SAMPLES, generator: torch.Generator | None = None
) -> dict[str, float]:
    """Point-to-surface Chamfer distances: surface samples of each mesh against the other mesh's *triangles*.

    With ``d(a, B)`` the distance from ``a`` to the closest point of surface ``B`` (:func:`surface_distance`),
    samples ``p`` of pred and ``g`` of gt:

    .. math:: \\mathrm{L1} = \\tfrac12 \\big(\\overline{d(p, G)} + \\overline{d(g, P)}\\big), \\quad
              \\mathrm{L2} = \\tfrac12 \\big(\\overline{d(p, G)^2} + \\overline{d(g, P)^2}\\big)

    Unlike :func:`chamfer` there is no sampling floor: a mesh against itself gives ~0 (round-off, below
    ``EXACT_DISTANCE_TOLERANCE`` of the diagonal), and the samples only set the variance of the mean.

    Args:
        pred: predicted mesh (open or closed).
        gt: ground-truth mesh (open or closed).
        num_samples: surface samples per mesh.
        generator: CPU generator for the samples (None: fixed seed DEFAULT_SEED); pred is sampled first.

    Returns:
        The keys of :func:`chamfer`: "l1", "l2", "l1_pred_to_gt", "l1_gt_to_pred", "l2_pred_to_gt",
        "l2_gt_to_pred", "scale" (gt bbox diagonal), "l1_over_diag", "l2_over_diag2".

    Differentiable w.r.t.: nothing (a metric).
    """
    directions = _exact_directions(
        _require_mesh(pred, "pred"), _require_mesh(gt, "gt"), num_samples, generator
    )
    return _distance_summary(directions.pred_to_gt.distances, directions.gt_to_pred.distances, _diagonal(gt))


@dataclass(frozen=True)
class FScoreAt:
    """F-score at one threshold, given as a fraction of the gt bounding-box diagonal."""

    fraction: float  # threshold / diagonal
    threshold: float  # in the inputs' units
    precision: float
    recall: float
    fscore: float


@dataclass(frozen=True)
class MeshMetrics:
    """Everything :func:`mesh_metrics` measures, with its protocol (distances in the inputs' units).

    ``chamfer_*`` are exact point-to-surface values (pred samples -> gt triangles and gt samples -> pred
    triangles); ``sampled_chamfer_*`` the nearest-sample values of :func:`chamfer` on the same samples.
    """

    num_samples: int
    seed: int
    diagonal: float  # gt bounding-box diagonal: the unit of every *_over_diag and of the F-score thresholds
    chamfer_l1: float
    chamfer_l2: float
    chamfer_l1_pred_to_gt: float
    chamfer_l1_gt_to_pred: float
    chamfer_l1_over_diag: float
    chamfer_l2_over_diag2: float
    sampled_chamfer_l1: float
    sampled_chamfer_l2: float
    sampled_chamfer_l1_over_diag: float
    fscores: tuple[FScoreAt, ...]
    normal_consistency: float
    normal_consistency_pred_to_gt: float
    normal_consistency_gt_to_pred: float

    @property
    def protocol(self) -> str:
        return (
            f"{self.num_samples} area-uniform samples per mesh (seed {self.seed}, pred sampled first); exact "
            "distances from each sample to the other mesh's triangles (Open3D RaycastingScene, float32 on "
            "coordinates centred on the gt bounding box); Chamfer L1/L2 = mean of the two directions; F-score "
            "thresholds as fractions of the gt bounding-box diagonal, d < threshold; normal consistency = mean "
            "|cos| between a sample's face normal and the normal of the face holding its closest point, both "
            "directions averaged; sampled Chamfer = nearest sample (cKDTree, float64) on the same samples"
        )

    def to_json(self) -> str:
        """One JSON object: every field (fscores as a list of objects) plus ``"protocol"``."""
        return json.dumps(asdict(self) | {"protocol": self.protocol})


def _validate_metrics_args(num_samples: object, thresholds: object, seed: object) -> tuple[float, ...]:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    try:
        fractions = tuple(float(t) for t in thresholds)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise TypeError(f"thresholds must be a sequence of numbers, got {thresholds!r}") from exc
    if not fractions or not all(0 < t < float("inf") for t in fractions):
        raise ValueError(
            f"thresholds must be positive finite fractions of the gt diagonal, got {thresholds!r}"
        )
    return fractions


def mesh_metrics(
    pred: Mesh,
    gt: Mesh,
    *,
    num_samples: int = DEFAULT_SAMPLES,
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
    seed: int = DEFAULT_SEED,
) -> MeshMetrics:
    """Exact Chamfer (L1, L2, per direction, over the diagonal), F-scores, normal consistency and the sampled
    Chamfer of a predicted mesh against a ground-truth mesh, from one set of surface samples.

    With samples ``p`` of pred (face normal ``n_p``) and ``g`` of gt, ``d`` and ``c`` the distance to and the
    closest point on the other surface (:func:`surface_distance`), ``D`` the gt bbox diagonal:

    .. math:: F_\\tau = \\frac{2 P R}{P + R},\\; P = \\Pr_p[d(p, G) < \\tau D],\\; R = \\Pr_g[d(g, P) < \\tau D];
              \\quad \\mathrm{NC} = \\tfrac12 \\big(\\overline{|n_p \\cdot n_{G}(c(p))|}
              + \\overline{|n_g \\cdot n_{P}(c(g))|}\\big)

    Args:
        pred: predicted mesh (open or closed; faces of zero area are ignored).
        gt: ground-truth mesh (open or closed).
        num_samples: area-uniform surface samples per mesh.
        thresholds: F-score thresholds as fractions of the gt bounding-box diagonal (default 0.5% and 1%).
        seed: seed of the sample generator (pred is sampled first, then gt, so ``sampled_chamfer_*`` equal
            ``chamfer(pred, gt, num_samples=n, generator=torch.Generator().manual_seed(seed))``).

    Returns:
        A :class:`MeshMetrics` record (``.to_json()`` writes it with its protocol).

    Differentiable w.r.t.: nothing (a metric).
    """
    fractions = _validate_metrics_args(num_samples, thresholds, seed)
    directions = _exact_directions(
        _require_mesh(pred, "pred"), _require_mesh(gt, "gt"), num_samples, torch.Generator().manual_seed(seed)
    )
    d_pg, d_gp = directions.pred_to_gt.distances, directions.gt_to_pred.distances
    diagonal = _diagonal(gt)
    exact = _distance_summary(d_pg, d_gp, diagonal)
    sampled = _distance_summary(*_kd_distances(directions.pred_samples, directions.gt_samples), diagonal)
    fscores = []
    for fraction in fractions:
        precision = float((d_pg < fraction * diagonal).double().mean())
        recall = float((d_gp < fraction * diagonal).double().mean())
        f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        fscores.append(FScoreAt(fraction, fraction * diagonal, precision, recall, f))
    nc_pg = float((directions.pred_normals * directions.pred_to_gt.normals).sum(-1).abs().mean())
    nc_gp = float((directions.gt_normals * directions.gt_to_pred.normals).sum(-1).abs().mean())
    return MeshMetrics(
        num_samples=num_samples,
        seed=seed,
        diagonal=diagonal,
        chamfer_l1=exact["l1"],
        chamfer_l2=exact["l2"],
        chamfer_l1_pred_to_gt=exact["l1_pred_to_gt"],
        chamfer_l1_gt_to_pred=exact["l1_gt_to_pred"],
        chamfer_l1_over_diag=exact["l1_over_diag"],
        chamfer_l2_over_diag2=exact["l2_over_diag2"],
        sampled_chamfer_l1=sampled["l1"],
        sampled_chamfer_l2=sampled["l2"],
        sampled_chamfer_l1_over_diag=sampled["l1_over_diag"],
        fscores=tuple(fscores),
        normal_consistency=0.5 * (nc_pg + nc_gp),
        normal_consistency_pred_to_gt=nc_pg,
        normal_consistency_gt_to_pred=nc_gp,
    )
