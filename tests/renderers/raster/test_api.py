"""Public-API contract of ``rasterize``: validation, backend choice, options, batching.

(That importing the package loads no Warp module is checked for every module by tests/test_imports.py.)
"""

import pytest
import torch

from recon.renderers._backend import BackendError
from recon.renderers.raster import Fragments, rasterize
from tests.renderers.raster.helpers import lift, orbit_cameras, pixel_camera, torus
from tests.typecheck import assert_rejected

RIGHT = [(0.0, 0.0), (4.0, 0.0), (0.0, 4.0)]


def _triangle():
    return torch.tensor(lift(RIGHT, 2.0)), torch.tensor([[0, 1, 2]])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(vertices=torch.zeros(3, 2)), ValueError, r"vertices must have shape \(V, 3\)"),
        (dict(vertices=torch.zeros(3, 3, dtype=torch.int64)), TypeError, "vertices must be a floating-point"),
        (dict(faces=torch.zeros(1, 4, dtype=torch.int64)), ValueError, r"faces must have shape \(F, 3\)"),
        (dict(faces=torch.zeros(1, 3)), TypeError, "faces must be an int32/int64"),
        (dict(faces=torch.tensor([[0, 1, 3]])), ValueError, r"faces must index vertices in \[0, 3\)"),
        (dict(camera="cam"), TypeError, "camera must be a recon.core.Camera"),
        (dict(layers=0), ValueError, "layers must be an int >= 1"),
        (dict(blur_sq=-1.0), ValueError, "blur_sq must be a finite float >= 0"),
        (dict(z_near=0.0), ValueError, "z_near must be > 0"),
        (
            dict(face_to_mesh=torch.zeros(2, dtype=torch.int64)),
            ValueError,
            r"face_to_mesh must have shape \(1,\)",
        ),
        (dict(face_to_mesh=torch.zeros(1)), TypeError, "face_to_mesh must be an int"),
        (dict(backend="cuda"), ValueError, "backend must be one of"),
    ],
)
def test_bad_input_names_the_argument(kwargs, error, match):
    vertices, faces = _triangle()
    args = dict(vertices=vertices, faces=faces, camera=pixel_camera(4, 4))
    args.update({k: v for k, v in kwargs.items() if k in args})
    options = {k: v for k, v in kwargs.items() if k not in args}
    assert_rejected(
        lambda: rasterize(args["vertices"], args["faces"], args["camera"], **options),
        match=match,
        error=error,
    )


def test_float64_runs_the_reference_and_explicit_warp_refuses():
    vertices, faces = _triangle()
    cam = pixel_camera(4, 4, dtype=torch.float64)
    frags = rasterize(vertices.double(), faces, cam, backend="auto")
    assert frags.bary.dtype == torch.float64 and frags.pix_to_face.dtype == torch.int64
    with pytest.raises(BackendError, match="raster.rasterize"):
        rasterize(vertices.double(), faces, cam, backend="warp")


def test_shapes_batched_cameras_and_face_to_mesh(backend):
    # Two tori (meshes 0 and 1) in one call, seen by three cameras: C = 3, K = 2.
    v0, f0 = torus(8, 6)
    vertices = torch.cat([v0, v0 * 0.5 + torch.tensor([0.0, 0.0, 0.6])])
    faces = torch.cat([f0, f0 + len(v0)])
    face_to_mesh = torch.cat([torch.zeros(len(f0)), torch.ones(len(f0))]).long()
    cams = orbit_cameras(3, 20, 16)
    frags = rasterize(vertices, faces, cams, layers=2, face_to_mesh=face_to_mesh, backend=backend)
    assert isinstance(frags, Fragments) and frags.layers == 2
    assert frags.pix_to_face.shape == (3, 16, 20, 2) and frags.bary.shape == (3, 16, 20, 2, 3)
    assert frags.dists.shape == frags.depth.shape == (3, 16, 20, 2)
    assert frags.face_to_mesh is face_to_mesh
    seen = face_to_mesh[frags.pix_to_face[frags.covered()]]
    assert set(seen.tolist()) == {0, 1}, "both meshes are visible"
    # Each camera alone gives the same fragments as its slice of the batch.
    single = rasterize(vertices, faces, cams[1], layers=2, backend=backend)
    assert torch.equal(single.pix_to_face[0], frags.pix_to_face[1])
    torch.testing.assert_close(single.depth[0], frags.depth[1])


def test_detach_bary_keeps_depth_and_dists_differentiable(backend):
    vertices, faces = _triangle()
    vertices.requires_grad_()
    frags = rasterize(vertices, faces, pixel_camera(4, 4), detach_bary=True, backend=backend)
    assert not frags.bary.requires_grad and frags.depth.requires_grad and frags.dists.requires_grad
    assert not frags.pix_to_face.is_floating_point()


def test_capture_inputs_of_failing_warp_call(monkeypatch, tmp_path):
    from recon.renderers.raster import warp_impl

    def broken(*args, **kwargs):
        raise RuntimeError("simulated kernel failure")

    monkeypatch.setattr(warp_impl, "_bin", broken)
    monkeypatch.setenv("RECON_CAPTURE_INPUTS", str(tmp_path))
    vertices, faces = _triangle()
    with pytest.raises(RuntimeError, match="simulated"):
        rasterize(vertices, faces, pixel_camera(4, 4), layers=2, blur_sq=0.5, backend="warp")
    saved = list(tmp_path.glob("raster_rasterize_*.pt"))
    assert len(saved) == 1
    data = torch.load(saved[0])
    assert data["v_cam"].shape == (1, 3, 3) and data["options"].tolist() == [4.0, 4.0, 2.0, 0.5]
