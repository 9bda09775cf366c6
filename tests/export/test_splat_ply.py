"""The triangle-splat PLY keeps every attribute (reload equals the scene), opens as a plain mesh, stores f_rest in
the 3DGS channel-major order, and still reads files of the former coefficient-major order."""

import numpy as np
import open3d as o3d
import plyfile
import torch
import trimesh

from recon.export.splat_ply import _face_dtype, read_splat_ply, scene_from_splat_ply, write_splat_ply
from recon.scenes.triangles import TriangleSceneConfig, TriangleSplatScene


def _scene(gen, n=30, degree=2) -> TriangleSplatScene:
    scene = TriangleSplatScene.from_points(TriangleSceneConfig(sh_degree=degree), torch.randn(n, 3, generator=gen),
                                           torch.rand(n, 3, generator=gen), generator=gen)  # fmt: skip
    with torch.no_grad():
        scene.sh_rest.normal_(generator=gen)
        scene.logit_opacities.normal_(generator=gen)
        scene.raw_sigmas.normal_(generator=gen)
    return scene


def test_splat_ply_round_trip(gen, tmp_path):
    scene = _scene(gen)
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


def test_f_rest_is_channel_major(gen, tmp_path):
    scene = _scene(gen, n=4, degree=2)  # K = 8 higher coefficients
    faces = plyfile.PlyData.read(str(write_splat_ply(scene, tmp_path / "s.ply")))["face"].data
    rest = scene.sh_rest.detach()
    for c in range(3):
        for k in range(8):  # f_rest_{c * K + k} = coefficient k + 1 of channel c
            assert np.array_equal(faces[f"f_rest_{c * 8 + k}"], rest[:, k, c].numpy())


def test_reads_former_coefficient_major_files(gen, tmp_path):
    scene = _scene(gen, n=5, degree=1)
    path = write_splat_ply(scene, tmp_path / "new.ply")
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].replace(b" f_rest channel_major", b"")
    vertex_bytes = 5 * 9 * 4  # 3N float32 xyz
    faces = np.frombuffer(data[end + vertex_bytes :], dtype=_face_dtype(3)).copy()
    flat = scene.sh_rest.detach().reshape(5, 9).numpy()  # the old order: f_rest_{k * 3 + c}
    for i in range(9):
        faces[f"f_rest_{i}"] = flat[:, i]
    old = tmp_path / "old.ply"
    old.write_bytes(header + data[end : end + vertex_bytes] + faces.tobytes())
    assert torch.equal(read_splat_ply(old)["sh_rest"], scene.sh_rest.detach())
