"""Splat files other tools open: the Inria 3DGS PLY (parsed with plyfile as splat viewers do), the official
Triangle Splatting parameters, coloured point clouds and camera JSON."""

import json
import math

import numpy as np
import plyfile
import pytest
import torch
from safetensors.torch import load_file

from recon.core import Mesh, ReconError
from recon.core.transforms import quat_to_rotmat
from recon.export.splat_formats import (
    THIN_SCALE_RATIO,
    CameraRecord,
    TriangleSplats,
    flat_gaussians,
    write_3dgs_ply,
    write_cameras_json,
    write_points_ply,
    write_ts_ckpt,
)
from recon.scenes.triangles import TriangleSceneConfig, TriangleSplatScene


def _splats(gen, n=20, degree=1) -> TriangleSplats:
    scene = TriangleSplatScene.from_points(TriangleSceneConfig(sh_degree=degree), torch.randn(n, 3, generator=gen),
                                           torch.rand(n, 3, generator=gen), generator=gen)  # fmt: skip
    with torch.no_grad():
        scene.sh_rest.normal_(generator=gen)
        scene.logit_opacities.normal_(generator=gen)
    return TriangleSplats.from_scene(scene, fmt="test")


def test_flat_gaussian_of_a_right_triangle():
    # vertices (0,0,0), (3,0,0), (0,3,0): centroid (1,1,0); offsets (-1,-1), (2,-1), (-1,2);
    # sum of outer products = [[6,-3],[-3,6]], /12 -> [[0.5,-0.25],[-0.25,0.5]]: eigenvalues 0.75 and 0.25
    v = torch.tensor([[[0.0, 0, 0], [3, 0, 0], [0, 3, 0]]])
    centre, std, R = flat_gaussians(v)
    assert torch.allclose(centre, torch.tensor([[1.0, 1.0, 0.0]]))
    assert torch.allclose(std[0, :2], torch.tensor([math.sqrt(0.75), 0.5]), atol=1e-6)
    assert math.isclose(float(std[0, 2]), THIN_SCALE_RATIO * math.sqrt(0.75), rel_tol=1e-5)
    assert torch.allclose(
        R[0, :, 2], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6
    )  # normal axis = triangle normal
    assert math.isclose(float(torch.linalg.det(R[0])), 1.0, abs_tol=1e-6)


def test_3dgs_ply_layout_and_geometry(gen, tmp_path):
    splats = _splats(gen, degree=1)
    ply = plyfile.PlyData.read(str(write_3dgs_ply(splats, tmp_path / "g.ply")))
    v = ply["vertex"].data
    names = ["x", "y", "z", "nx", "ny", "nz", *[f"f_dc_{i}" for i in range(3)], *[f"f_rest_{i}" for i in range(45)],
             "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip
    assert list(v.dtype.names) == names and len(v) == len(splats)
    assert all(v.dtype[n] == np.float32 for n in names)
    tri = splats.vertices.double()
    centre = np.stack([v["x"], v["y"], v["z"]], 1)
    assert np.allclose(centre, tri.mean(1).numpy(), atol=1e-5)
    q = torch.from_numpy(np.stack([v[f"rot_{i}"] for i in range(4)], 1)).double()
    R = quat_to_rotmat(q / q.norm(dim=-1, keepdim=True))
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal = normal / normal.norm(dim=-1, keepdim=True)
    assert torch.allclose(R[:, :, 2].abs().mul(normal.abs()).sum(-1), torch.ones(len(splats), dtype=torch.float64),
                          atol=1e-5)  # fmt: skip
    scale = torch.from_numpy(np.stack([v[f"scale_{i}"] for i in range(3)], 1)).double().exp()
    # in-plane covariance of the Gaussian = second moments of the uniform triangle (1/12 sum of outer offsets)
    d = tri - tri.mean(1, keepdim=True)
    cov_tri = d.transpose(1, 2) @ d / 12
    cov = R @ torch.diag_embed(scale.square()) @ R.transpose(1, 2)
    assert torch.allclose(cov, cov_tri, atol=1e-5 * float(cov_tri.abs().max()))
    assert (scale[:, 2] < 0.01 * scale[:, 0]).all()  # thin along the normal
    assert np.array_equal(v["opacity"], splats.logit_opacities.numpy())  # logit, as 3DGS stores it
    assert np.array_equal(v["f_dc_1"], splats.sh_dc[:, 0, 1].numpy())
    # f_rest channel-major, zero-padded from degree 1 (3 coefficients) to degree 3 (15): R's k-th is f_rest_k
    assert np.array_equal(v["f_rest_2"], splats.sh_rest[:, 2, 0].numpy())
    assert np.array_equal(v["f_rest_15"], splats.sh_rest[:, 0, 1].numpy())
    assert not v["f_rest_3"].any() and not v["f_rest_44"].any()


def test_ts_ckpt_official_layout(gen, tmp_path):
    splats = _splats(gen, n=7, degree=3)
    state = load_file(str(write_ts_ckpt(splats, tmp_path / "ts.safetensors")))
    shapes = {k: tuple(t.shape) for k, t in state.items()}
    assert shapes == {"triangles_points": (7, 3, 3), "sigma": (7, 1), "features_dc": (7, 1, 3),
                      "features_rest": (7, 15, 3), "opacity": (7, 1), "active_sh_degree": ()}  # fmt: skip
    assert torch.equal(state["triangles_points"], splats.vertices)
    assert torch.equal(state["sigma"][:, 0], splats.raw_sigmas) and int(state["active_sh_degree"]) == 3


def test_transform_refuses_rotation_with_view_dependent_colour(gen):
    splats = _splats(gen, degree=1)
    S = torch.eye(4, dtype=torch.float64)
    S[:3, :3] = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64) * 2.0
    with pytest.raises(ReconError, match="--frame normalized"):
        splats.transformed(S, fmt="3dgs-ply")
    S = torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64))
    S[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    moved = splats.transformed(S, fmt="3dgs-ply")
    assert torch.allclose(moved.vertices, splats.vertices * 2 + torch.tensor([1.0, 2.0, 3.0]), atol=1e-5)


def test_points_ply_soup_centroids_and_colours(gen, tmp_path):
    faces = 6
    mesh = Mesh(vertices=torch.randn(3 * faces, 3, generator=gen), faces=torch.arange(3 * faces).reshape(-1, 3),
                face_colors=torch.rand(faces, 3, generator=gen))  # fmt: skip
    v = plyfile.PlyData.read(str(write_points_ply(mesh, tmp_path / "p.ply")))["vertex"].data
    assert len(v) == faces
    assert np.allclose(
        np.stack([v["x"], v["y"], v["z"]], 1), mesh.vertices[mesh.faces].mean(1).numpy(), atol=1e-6
    )
    rgb = np.stack([v["red"], v["green"], v["blue"]], 1) / 255.0
    assert np.abs(rgb - mesh.face_colors.numpy()).max() < 0.5 / 255 + 1e-6


def test_cameras_json_frames(tmp_path):
    T = torch.eye(4, dtype=torch.float64)
    T[:3, 3] = torch.tensor([0.0, 0.0, 4.0])
    K = torch.tensor([[50.0, 0, 32], [0, 50, 24], [0, 0, 1]], dtype=torch.float64)
    rec = CameraRecord("train/r_0.png", "train", 64, 48, K, T)
    S = torch.diag(torch.tensor([0.5, 0.5, 0.5, 1.0], dtype=torch.float64))
    original = json.loads(write_cameras_json([rec], S, "original", tmp_path / "o.json").read_text())
    normalized = json.loads(write_cameras_json([rec], S, "normalized", tmp_path / "n.json").read_text())
    cam = original["cameras"][0]
    assert (cam["name"], cam["width"], cam["height"], cam["K"]) == ("train/r_0.png", 64, 48, K.tolist())
    assert cam["T_cam_world"] == T.tolist()
    # x_norm = 0.5 x_orig: the camera centre (0, 0, -4) becomes (0, 0, -2)
    assert normalized["cameras"][0]["T_cam_world"][2][3] == pytest.approx(2.0)
