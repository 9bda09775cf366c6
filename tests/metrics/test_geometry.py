"""Geometry metrics: surface sampling, Chamfer distances and F-score on hand-computable configurations."""

import math

import pytest
import torch

from recon.core import Mesh
from recon.metrics import FScore, chamfer, fscore, sample_surface


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
    with pytest.raises(ValueError, match="gt"):
        chamfer(_grid_points(2, 1.0), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="threshold"):
        fscore(_grid_points(2, 1.0), _grid_points(2, 1.0), threshold=0.0)
