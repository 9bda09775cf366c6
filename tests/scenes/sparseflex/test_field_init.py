"""Corner values of a SparseFlex grid from analytic fields (the sampling behind ``--init-from``)."""

import pytest
import torch

from recon.core.errors import ReconError
from recon.scenes.sparseflex import SparseFlexScene, SparseFlexSceneConfig
from recon.scenes.sparseflex.field_init import corner_points, density_corner_sdf, sdf_corner_values

CENTER = torch.tensor([0.2, -0.1, 0.3])
SIZE, R, RADIUS = 2.0, 24, 0.7


def _sphere_sdf(x):
    return (x - CENTER).norm(dim=-1) - RADIUS


def _box(half=1.0):
    return torch.stack([CENTER - half, CENTER + half])


def _sphere_points(n=400) -> torch.Tensor:
    d = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))
    return CENTER + RADIUS * d / d.norm(dim=-1, keepdim=True)


def _voxel_of(scene: SparseFlexScene, x: torch.Tensor) -> torch.Tensor:
    r = scene.grid().resolution
    unit = (x - scene.box_center) / scene.box_size + 0.5
    return (unit * r).floor().long().clamp(0, r - 1)


def _covered(scene: SparseFlexScene, x: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the voxel containing each point is active."""
    r = scene.grid().resolution + 1
    keys = lambda v: (v[:, 0] * r + v[:, 1]) * r + v[:, 2]  # noqa: E731
    return torch.isin(keys(_voxel_of(scene, x)), keys(scene.voxels))


def test_sdf_values_are_the_distance_in_voxel_units():
    s = sdf_corner_values(_sphere_sdf, resolution=R, center=CENTER, size=SIZE, field_box=_box(), clip=2.0)
    expected = (_sphere_sdf(corner_points(R, CENTER, SIZE)) * R / SIZE).clamp(-2, 2).reshape(s.shape)
    assert s.shape == (R + 1,) * 3 and torch.allclose(s, expected, atol=1e-5)
    # corners outside the field's box are outside (+clip) whatever the field says there
    s_small = sdf_corner_values(lambda x: -torch.ones(len(x)), resolution=R, center=CENTER, size=SIZE,
                                field_box=_box(0.5), clip=2.0)  # fmt: skip
    assert float(s_small.max()) == 2.0 and float(s_small.min()) == -2.0


@pytest.mark.parametrize("kind", ["sdf", "density"])
def test_band_from_a_field_covers_its_level_set(kind):
    cfg = SparseFlexSceneConfig(resolution=R)
    common = {"resolution": R, "center": CENTER, "size": SIZE, "field_box": _box(), "clip": cfg.sdf_clip}
    if kind == "sdf":
        s = sdf_corner_values(_sphere_sdf, **common)
    else:  # a soft ball of density 50 inside, threshold 10: the level set sits within a voxel of the sphere
        s = density_corner_sdf(lambda x: 50 * torch.sigmoid(-40 * _sphere_sdf(x)), threshold=10.0, **common)
    scene = SparseFlexScene.from_corner_sdf(cfg, s, CENTER, SIZE)
    assert bool(_covered(scene, _sphere_points()).all())
    assert not bool(_covered(scene, CENTER[None]).any())  # the band is a shell, not the filled ball
    # ... of voxels near the level set: a voxel is at most band_radius voxels (Chebyshev) from a surface voxel
    voxel = SIZE / R
    centres = scene.to_world((scene.voxels.float() + 0.5) / R - 0.5)
    reach = (cfg.band_radius + 1) * 3**0.5 * voxel + (0.5 if kind == "density" else 0.0) * voxel
    assert float(((centres - CENTER).norm(dim=-1) - RADIUS).abs().max()) < reach
    with torch.no_grad():
        mesh = scene.extract(training=False, backend="torch")
    radii = (scene.to_world(mesh.vertices) - CENTER).norm(dim=-1)
    assert float((radii - RADIUS).abs().max()) < (0.6 if kind == "sdf" else 1.2) * voxel


def test_empty_or_full_density_is_an_error():
    common = {"resolution": 8, "center": CENTER, "size": SIZE, "field_box": _box(), "clip": 2.0}
    with pytest.raises(ReconError, match="is empty"):
        density_corner_sdf(lambda x: torch.zeros(len(x)), threshold=1.0, **common)
    with pytest.raises(ReconError, match="the whole box"):
        density_corner_sdf(lambda x: torch.ones(len(x)), threshold=0.5, **common)
