"""Block template from the config: tessellation kind, refinement for export, atlas (spec 2, 4, 11)."""

import pytest
import torch

from recon.scenes.superquadrics.config import SuperquadricsConfig
from recon.scenes.superquadrics.template import block_template


def test_icosphere_template_levels():
    cfg = SuperquadricsConfig(texture_size=64)
    t = block_template(cfg)
    assert t.base.vertices.shape == (42, 3) and t.eta.shape == (42,) and t.eta.dtype == torch.float64
    assert t.atlas.texture_size == 64 and torch.equal(t.atlas.faces, t.base.faces)
    assert block_template(cfg, level=3).base.faces.shape == (1280, 3)
    assert block_template(SuperquadricsConfig(icosphere_level=2)).base.vertices.shape == (162, 3)


def test_uv_sphere_template_and_refinement():
    cfg = SuperquadricsConfig(tessellation="uv_sphere", uv_sphere_lat=4, uv_sphere_lon=8)
    t = block_template(cfg)
    assert t.base.vertices.shape == (3 * 8 + 2, 3)
    finer = block_template(cfg, level=2)  # one level above the trained one doubles both counts
    assert finer.base.vertices.shape == (7 * 16 + 2, 3)
    u = finer.atlas.uv[finer.atlas.faces_uv][..., 0]
    assert float((u.amax(-1) - u.amin(-1)).max()) < 0.5
    with pytest.raises(ValueError, match="level"):
        block_template(cfg, level=0)
