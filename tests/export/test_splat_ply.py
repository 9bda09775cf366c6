"""The triangle-splat PLY keeps every attribute (reload equals the scene) and opens as a plain mesh."""

import open3d as o3d
import torch
import trimesh

from recon.export.splat_ply import read_splat_ply, scene_from_splat_ply, write_splat_ply
from recon.scenes.triangles import TriangleSceneConfig, TriangleSplatScene


def test_splat_ply_round_trip(gen, tmp_path):
    scene = TriangleSplatScene.from_points(TriangleSceneConfig(sh_degree=2), torch.randn(30, 3, generator=gen),
                                           torch.rand(30, 3, generator=gen), generator=gen)  # fmt: skip
    with torch.no_grad():
        scene.sh_rest.normal_(generator=gen)
        scene.logit_opacities.normal_(generator=gen)
        scene.raw_sigmas.normal_(generator=gen)
    path = write_splat_ply(scene, tmp_path / "splats.ply")
    params = read_splat_ply(path)
    assert int(params["sh_degree"]) == 2
    for name in ("vertices", "sh_dc", "sh_rest", "logit_opacities", "raw_sigmas"):
        assert torch.equal(params[name], getattr(scene, name).detach()), name
    reloaded = scene_from_splat_ply(path)
    assert reloaded.num_primitives() == 30 and int(reloaded.active_sh_degree) == 2
    assert torch.equal(reloaded.vertices.detach(), scene.vertices.detach())
    tm = trimesh.load(str(path), process=False)
    om = o3d.io.read_triangle_mesh(str(path))
    assert (len(tm.vertices), len(tm.faces)) == (90, 30)
    assert (len(om.vertices), len(om.triangles)) == (90, 30)
