"""Geometry metrics: surface sampling, sampled and exact (point-to-surface) Chamfer distances, F-score and normal
consistency on hand-computable configurations."""

import json
import math

import pytest
import torch
import trimesh

from recon.core import Mesh
from recon.metrics import (
    FScore,
    MeshMetrics,
    chamfer,
    exact_chamfer,
    fscore,
    mesh_metrics,
    sample_surface,
    surface_distance,
)
from recon.metrics.geometry import EXACT_DISTANCE_TOLERANCE
from tests.typecheck import assert_rejected


def _square(half: float = 0.5, z: float = 0.0, cells: int = 4) -> Mesh:
    """The square [-h, h]^2 at height z, split into cells x cells quads."""
    g = torch.linspace(-half, half, cells + 1, dtype=torch.float64)
    y, x = torch.meshgrid(g, g, indexing="ij")
    vertices = torch.stack([x.flatten(), y.flatten(), torch.full_like(x.flatten(), z)], -1)
    i, j = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
    v00 = (i * (cells + 1) + j).flatten()
    faces = torch.cat(
        [
            torch.stack([v00, v00 + 1, v00 + cells + 2], -1),
            torch.stack([v00, v00 + cells + 2, v00 + cells + 1], -1),
        ]
    )
    return Mesh(vertices=vertices, faces=faces)


def _grid_points(n: int, spacing: float) -> torch.Tensor:
    g = torch.arange(n, dtype=torch.float64) * spacing
    y, x = torch.meshgrid(g, g, indexing="ij")
    return torch.stack([x.flatten(), y.flatten(), torch.zeros(n * n, dtype=torch.float64)], -1)


def test_sample_surface_uniform_on_square(gen) -> None:
    pts = sample_surface(_square(), 20_000, generator=gen)
    assert pts.shape == (20_000, 3)
    assert pts[:, 2].abs().max() == 0 and pts[:, :2].abs().max() <= 0.5
    # uniform on the square: each quadrant holds 1/4 of the samples (binomial std ~0.003)
    quadrant = (pts[:, 0] > 0).double() * 2 + (pts[:, 1] > 0).double()
    counts = torch.bincount(quadrant.long(), minlength=4).double() / len(pts)
    assert (counts - 0.25).abs().max() < 0.015


def test_chamfer_of_shifted_points_is_exact() -> None:
    # grid spacing 0.1, copy shifted by 0.03 along the normal: every nearest neighbour is the twin at 0.03
    # (others are at sqrt(0.03^2 + 0.1^2) > 0.03), so L1 = 0.03 and L2 = 0.0009 in both directions.
    gt = _grid_points(10, 0.1)
    pred = gt + torch.tensor([0.0, 0.0, 0.03], dtype=torch.float64)
    out = chamfer(pred, gt)
    for key in ("l1", "l1_pred_to_gt", "l1_gt_to_pred"):
        assert out[key] == pytest.approx(0.03, abs=1e-12)
    assert out["l2"] == pytest.approx(0.0009, abs=1e-12)
    diag = math.hypot(0.9, 0.9)  # gt bbox: 0.9 x 0.9 x 0
    assert out["scale"] == pytest.approx(diag, abs=1e-12)
    assert out["l1_over_diag"] == pytest.approx(0.03 / diag, abs=1e-12)
    assert out["l2_over_diag2"] == pytest.approx(0.0009 / diag**2, abs=1e-12)


def test_chamfer_of_identical_points_is_zero() -> None:
    pts = _grid_points(5, 0.2)
    out = chamfer(pts, pts)
    assert out["l1"] == 0.0 and out["l2"] == 0.0


def test_chamfer_mesh_with_itself_is_small(gen) -> None:
    mesh = _square()
    out = chamfer(mesh, mesh, num_samples=20_000, generator=gen)
    # independent samples: NN distance ~ sample spacing (1/sqrt(20000) ~ 0.007) << the 1.41 diagonal
    assert out["scale"] == pytest.approx(math.sqrt(2.0), abs=1e-12)
    assert out["l1"] < 0.01 and out["l1_over_diag"] < 0.007


def test_chamfer_of_plane_shifted_along_normal(gen) -> None:
    # A 1 x 1 square and its copy 0.1 above: interior samples are 0.1 from the other plane; the NN is
    # slightly farther (in-plane offset ~ sample spacing 0.005), so 0.1 <= L1 < 0.1 * 1.01.
    out = chamfer(_square(z=0.1), _square(), num_samples=40_000, generator=gen)
    assert 0.1 - 1e-12 <= out["l1"] < 0.101
    assert 0.01 - 1e-12 <= out["l2"] < 0.0102


def test_chamfer_is_reproducible_with_default_seed() -> None:
    a, b = _square(), _square(z=0.05, half=0.4)
    assert chamfer(a, b, num_samples=2000) == chamfer(a, b, num_samples=2000)


def test_fscore_thresholds() -> None:
    gt = _grid_points(10, 0.1)
    pred = gt.clone()
    pred[:50, 2] += 0.03  # half the points 0.03 off, half exact
    # tau = 0.02: precision 0.5 (pred) and recall 0.5 (gt points whose twin moved; other NNs are >= 0.1 away)
    f = fscore(pred, gt, threshold=0.02)
    assert isinstance(f, FScore)
    assert f["precision"] == pytest.approx(0.5) and f["recall"] == pytest.approx(0.5)
    assert float(f) == pytest.approx(0.5) and f["threshold"] == 0.02
    # tau = 0.05 covers the 0.03 offset: perfect
    assert float(fscore(pred, gt, threshold=0.05)) == pytest.approx(1.0)
    # tau = 0.01 against a cloud 0.2 away: nothing matches, F = 0 (not NaN)
    far = fscore(gt + torch.tensor([0.0, 0.0, 0.2], dtype=torch.float64), gt, threshold=0.01)
    assert float(far) == 0.0 and dict(far) == {
        "fscore": 0.0,
        "precision": 0.0,
        "recall": 0.0,
        "threshold": 0.01,
    }


def test_fscore_precision_recall_asymmetry() -> None:
    # pred covers only half of gt: precision 1, recall 0.5, F = 2 * 1 * 0.5 / 1.5 = 2/3
    gt = _grid_points(10, 0.1)
    pred = gt[:50]
    f = fscore(pred, gt, threshold=0.01)
    assert f.precision == 1.0 and f.recall == 0.5
    assert float(f) == pytest.approx(2 / 3)


def test_bad_inputs() -> None:
    with pytest.raises(TypeError, match="pred"):
        chamfer([[0.0, 0.0, 0.0]], _grid_points(2, 1.0))
    assert_rejected(lambda: chamfer(_grid_points(2, 1.0), torch.zeros(4, 2)), match="gt")
    with pytest.raises(ValueError, match="threshold"):
        fscore(_grid_points(2, 1.0), _grid_points(2, 1.0), threshold=0.0)


# ---- exact point-to-surface metrics ----------------------------------------------------------------------------

SAMPLES = 4000  # per mesh: enough for the stated margins (binomial std of a fraction <= 0.008)


def _icosphere(radius: float, subdivisions: int = 3) -> Mesh:
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return Mesh(vertices=torch.tensor(m.vertices), faces=torch.tensor(m.faces))


def _hemisphere(radius: float = 1.0) -> Mesh:
    """The open upper half (z >= 0) of an icosphere: faces whose three vertices have z >= 0."""
    sphere = _icosphere(radius)
    keep = (sphere.vertices[sphere.faces][..., 2] >= -1e-12).all(-1)
    return Mesh(vertices=sphere.vertices, faces=sphere.faces[keep])


def test_surface_distance_to_one_triangle() -> None:
    # Triangle (0,0,0), (1,0,0), (0,1,0): above its interior the distance is the height; beyond the vertex
    # (1,0,0) it is the distance to that vertex; beside the hypotenuse x + y = 1 it is |x + y - 1| / sqrt(2).
    tri = Mesh(torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]), torch.tensor([[0, 1, 2]]))
    points = torch.tensor([[0.2, 0.3, 0.7], [2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.25, 0.25, -0.1]])
    out = surface_distance(points, tri)
    expected = torch.tensor([0.7, 1.0, math.sqrt(0.5), 0.1], dtype=torch.float64)
    torch.testing.assert_close(out.distances, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        out.closest[1], torch.tensor([1.0, 0, 0], dtype=torch.float64), rtol=0, atol=1e-6
    )
    assert out.faces.tolist() == [0, 0, 0, 0] and out.normals.abs().tolist() == [[0.0, 0.0, 1.0]] * 4


def test_exact_chamfer_of_mesh_with_itself_is_zero_sampled_is_not() -> None:
    sphere = _icosphere(0.7)
    exact = exact_chamfer(sphere, sphere, num_samples=SAMPLES)
    sampled = chamfer(sphere, sphere, num_samples=SAMPLES)
    assert exact["l1_over_diag"] < EXACT_DISTANCE_TOLERANCE  # float32 round-off only
    assert sampled["l1_over_diag"] > 1e-3  # the sampling floor: ~ the sample spacing
    metrics = mesh_metrics(sphere, sphere, num_samples=SAMPLES)
    assert metrics.chamfer_l1_over_diag < EXACT_DISTANCE_TOLERANCE and metrics.chamfer_l2_over_diag2 < 1e-12
    assert [f.fscore for f in metrics.fscores] == [1.0, 1.0]
    assert metrics.normal_consistency == pytest.approx(1.0, abs=1e-9)


def test_exact_chamfer_of_concentric_spheres() -> None:
    # Similar convex polyhedra of radii r and r + d: every sample's distance to the other surface lies in
    # [d * h_min, d], h_min = the smallest distance of a face plane from the centre of the unit polyhedron (a point
    # beyond the outer face plane is >= d * h from the inner one; scaling it by r / (r + d) lands on the inner one).
    r, d = 0.5, 0.02
    inner, outer = _icosphere(r), _icosphere(r + d)
    unit = _icosphere(1.0)
    tri = unit.vertices[unit.faces]
    h_min = float((unit.face_normals() * tri[:, 0]).sum(-1).min())
    for pred, gt in ((outer, inner), (inner, outer)):
        out = exact_chamfer(pred, gt, num_samples=SAMPLES)
        tol = EXACT_DISTANCE_TOLERANCE * 2 * (r + d)
        for key in ("l1_pred_to_gt", "l1_gt_to_pred"):
            assert d * h_min - tol <= out[key] <= d + tol, (key, out[key], d * h_min)
        assert out["l2"] <= d**2 + 1e-9
    assert h_min > 0.98  # so the bracket above pins the value to 2% of d


def test_exact_chamfer_and_fscore_of_offset_plane() -> None:
    # Two 1 x 1 squares 0.1 apart: every sample is exactly 0.1 from the other square (its foot point lies inside).
    pred, gt = _square(z=0.1), _square()
    metrics = mesh_metrics(
        pred, gt, num_samples=SAMPLES, thresholds=(0.1 / math.sqrt(2) * 0.999, 0.1 / math.sqrt(2) * 1.001)
    )
    assert metrics.diagonal == pytest.approx(math.sqrt(2.0), abs=1e-12)
    assert metrics.chamfer_l1 == pytest.approx(0.1, abs=1e-6)
    assert metrics.chamfer_l2 == pytest.approx(0.01, abs=1e-6)
    assert metrics.chamfer_l1_over_diag == pytest.approx(0.1 / math.sqrt(2), abs=1e-6)
    assert metrics.sampled_chamfer_l1 > metrics.chamfer_l1 + 1e-4  # the sampled one adds the in-plane spacing
    below, above = metrics.fscores
    assert (below.precision, below.recall, below.fscore) == (0.0, 0.0, 0.0)
    assert (above.precision, above.recall, above.fscore) == (1.0, 1.0, 1.0)
    assert above.threshold == pytest.approx(0.1 * 1.001)
    assert metrics.normal_consistency == pytest.approx(1.0, abs=1e-9)


def test_normal_consistency_of_perpendicular_patch() -> None:
    # gt: the square z = 0; pred: a vertical patch (y = 0, x in [-0.25, 0.25], z in [0.05, 0.55]) above it.
    # Each sample's closest point lies on a face perpendicular to its own: |cos| = 0 in both directions.
    gt = _square()
    patch = _square(half=0.25, cells=2)
    v = patch.vertices
    pred = Mesh(
        vertices=torch.stack([v[:, 0], torch.zeros_like(v[:, 0]), v[:, 1] + 0.3], -1), faces=patch.faces
    )
    metrics = mesh_metrics(pred, gt, num_samples=SAMPLES)
    assert metrics.normal_consistency < 1e-6
    assert metrics.normal_consistency_pred_to_gt < 1e-6 and metrics.normal_consistency_gt_to_pred < 1e-6


def test_open_meshes_single_triangle_and_hemisphere() -> None:
    tri = Mesh(torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]), torch.tensor([[0, 1, 2]]))
    assert exact_chamfer(tri, tri, num_samples=SAMPLES)["l1_over_diag"] < EXACT_DISTANCE_TOLERANCE
    lifted = Mesh(tri.vertices + torch.tensor([0.0, 0.0, 0.05]), tri.faces)
    assert exact_chamfer(lifted, tri, num_samples=SAMPLES)["l1"] == pytest.approx(0.05, abs=1e-6)
    # An open hemisphere inside the full sphere: accuracy exact 0; half of the sphere's samples (the lower half)
    # are far, so recall at 1% of the diagonal is 0.5 plus the thin band under the rim (< 2% of the area).
    hemisphere, sphere = _hemisphere(), _icosphere(1.0)
    assert (
        exact_chamfer(hemisphere, hemisphere, num_samples=SAMPLES)["l1_over_diag"] < EXACT_DISTANCE_TOLERANCE
    )
    metrics = mesh_metrics(hemisphere, sphere, num_samples=SAMPLES, thresholds=(0.01,))
    assert metrics.chamfer_l1_pred_to_gt < EXACT_DISTANCE_TOLERANCE * metrics.diagonal
    assert metrics.fscores[0].precision == 1.0 and 0.45 < metrics.fscores[0].recall < 0.55
    assert metrics.chamfer_l1_gt_to_pred > 0.2  # lower half: ~0.5 on average from the rim


def test_mesh_metrics_record_json_and_sampled_agreement() -> None:
    pred, gt = _icosphere(0.52), _icosphere(0.5)
    metrics = mesh_metrics(pred, gt, num_samples=2000, seed=3)
    assert isinstance(metrics, MeshMetrics)
    sampled = chamfer(pred, gt, num_samples=2000, generator=torch.Generator().manual_seed(3))
    assert metrics.sampled_chamfer_l1 == sampled["l1"] and metrics.sampled_chamfer_l2 == sampled["l2"]
    assert metrics == mesh_metrics(pred, gt, num_samples=2000, seed=3)  # reproducible from the seed
    record = json.loads(metrics.to_json())
    assert record["chamfer_l1"] == metrics.chamfer_l1 and "protocol" in record
    assert [f["fraction"] for f in record["fscores"]] == [0.005, 0.01]


def test_mesh_metrics_bad_inputs() -> None:
    mesh = _square()
    with pytest.raises(TypeError, match="pred"):
        mesh_metrics(torch.zeros(10, 3), mesh)
    with pytest.raises(TypeError, match="gt"):
        exact_chamfer(mesh, torch.zeros(10, 3))
    with pytest.raises(ValueError, match="thresholds"):
        mesh_metrics(mesh, mesh, thresholds=(0.01, -0.1))
    with pytest.raises(ValueError, match="num_samples"):
        mesh_metrics(mesh, mesh, num_samples=0)
    with pytest.raises(ValueError, match="positive area"):
        surface_distance(torch.zeros(1, 3), Mesh(torch.zeros(3, 3), torch.tensor([[0, 1, 2]])))
    assert_rejected(lambda: surface_distance(torch.zeros(4, 2), mesh), match="points")


def test_importing_metrics_does_not_load_open3d() -> None:
    # Open3D (seconds to import) loads on the first exact-distance call only.
    import subprocess
    import sys

    code = "import sys, recon.metrics; print('open3d' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False", out.stderr
