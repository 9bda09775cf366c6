"""API contract: validation errors, backend resolution, lazy Warp import, culling rules, SH colours."""

import subprocess
import sys

import pytest
import torch

from recon.core.errors import ReconError
from recon.renderers._backend import resolve_backend
from recon.renderers.splat import eval_sh, project_triangles, rasterize_triangles
from recon.renderers.splat.sh import SH_C0, rgb_to_sh
from tests.renderers.splat.helpers import camera, lift, pixel_camera
from tests.tolerances import assert_close, tol
from tests.typecheck import assert_rejected


def _args(n=2, dtype=torch.float32):
    tri = torch.tensor([[-0.3, -0.3, 2.0], [0.3, -0.3, 2.0], [0.0, 0.3, 2.0]], dtype=dtype)
    return (
        tri.expand(n, 3, 3).clone(),
        torch.ones(n, 3, dtype=dtype),
        torch.full((n,), 0.5, dtype=dtype),
        torch.ones(n, dtype=dtype),
    )


@pytest.mark.parametrize(
    ("index", "bad", "error", "match"),
    [
        (0, torch.zeros(2, 3), ValueError, "vertices must have shape"),
        (1, torch.ones(2, 4), ValueError, "colors must have shape"),
        (1, torch.ones(3, 2, 3), ValueError, "colors must have shape"),
        (2, torch.ones(3), ValueError, "opacities must have shape"),
        (3, torch.ones(2, 1), ValueError, "sigmas must have shape"),
        (2, torch.ones(2, dtype=torch.float64), TypeError, "opacities has dtype"),
        (0, torch.zeros(2, 3, 3, dtype=torch.int64), TypeError, "vertices must be a floating-point"),
        (1, [[1.0, 1.0, 1.0]] * 2, TypeError, "colors must be a torch.Tensor"),
    ],
)
def test_validation_errors(index, bad, error, match):
    args = list(_args())
    args[index] = bad
    assert_rejected(
        lambda: rasterize_triangles(*args, camera(16, 16), backend="torch"), match=match, error=error
    )


def test_validation_background_camera_device():
    assert_rejected(
        lambda: rasterize_triangles(*_args(), camera(16, 16), background=torch.zeros(4)),
        match="background must have shape",
    )
    assert_rejected(
        lambda: rasterize_triangles(*_args(), "camera"),  # type: ignore[arg-type]
        match="camera must be a recon.core.Camera",
        error=TypeError,
    )
    args = list(_args())
    args[1] = args[1].to("meta")
    with pytest.raises(ValueError, match="colors is on meta"):
        rasterize_triangles(*args, camera(16, 16))
    assert_rejected(
        lambda: rasterize_triangles(*_args(), camera(16, 16), backend="cuda"),  # type: ignore[arg-type]
        match="backend must be one of",
    )


def test_backend_resolution():
    x32 = torch.zeros(1)
    assert resolve_backend("torch", x32, op="test.op") == "torch"
    assert resolve_backend("auto", x32, op="test.op") == "warp"  # warp-lang is a dependency and runs on CPU
    assert resolve_backend("auto", torch.zeros(1, device="meta"), op="test.op") == "torch"
    with pytest.raises(ReconError, match="backend='warp' cannot run"):
        resolve_backend("warp", torch.zeros(1, device="meta"), op="test.op")
    with pytest.raises(ReconError, match="float32"):
        rasterize_triangles(*_args(dtype=torch.float64), camera(16, 16, dtype=torch.float64), backend="warp")
    # float64 with "auto" runs the reference
    out = rasterize_triangles(*_args(dtype=torch.float64), camera(16, 16, dtype=torch.float64))
    assert out.rgb.dtype == torch.float64


def test_output_shapes_dtypes(backend, device):
    args = [t.to(device) for t in _args(3)]
    out = rasterize_triangles(*args, camera(20, 12).to(device), backend=backend, compute_distortion=True)
    assert out.rgb.shape == (1, 12, 20, 3) and out.alpha.shape == (1, 12, 20, 1)
    assert out.depth.shape == out.depth_median.shape == out.distortion.shape == (1, 12, 20, 1)
    assert out.normals.shape == (1, 12, 20, 3)
    s = out.stats
    assert s.means2d.shape == (1, 3, 2) and s.radius_px.dtype == torch.int32 and s.visible.dtype == torch.bool
    assert s.max_blending.shape == s.inradius_px.shape == (1, 3)
    assert all(t.device.type == device for t in (out.rgb, s.max_blending, s.visible))
    assert not s.max_blending.requires_grad
    assert rasterize_triangles(*args, camera(20, 12).to(device), backend=backend).distortion is None


def test_import_is_light():
    code = (
        "import sys, recon, recon.renderers, recon.renderers.splat, recon.renderers._backend;"
        "assert 'warp' not in sys.modules, 'warp imported';"
        "assert 'recon.renderers.splat.warp_kernels' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_culling_rules():
    # Reference triangle: right triangle with legs 6 and 8 (inradius 2) in pixel space at depth 10.
    p = torch.tensor([[4.0, 4.0], [10.0, 4.0], [4.0, 12.0]])
    base = lift(p[None], 10.0)
    cam = pixel_camera(32, 32)

    def visible(verts, o=0.5, sigma=1.0):
        n = verts.shape[0]
        proj = project_triangles(verts, torch.ones(n, 3), torch.full((n,), o), torch.full((n,), sigma), cam)
        return bool(proj.visible[0]), proj

    assert visible(base)[0]
    assert not visible(base, o=0.009)[0]  # o < 0.01
    near = lift(p[None], 0.19)  # centroid depth 0.19 <= 0.2
    assert not visible(near)[0]
    behind = base.clone()
    behind[0, 0, 2] = -5.0  # one vertex behind the camera (centroid still in front)
    assert not visible(behind)[0]
    small = lift(p[None] * 0.2, 10.0)  # inradius 0.4 px
    assert not visible(small)[0]
    huge = lift(p[None] * 300, 10.0)  # R > 1600 px
    assert not visible(huge)[0]
    # edge-on: a triangle in the plane x = 0 seen from the origin
    edge_on = torch.tensor([[[0.0, -1.0, 5.0], [0.0, 1.0, 5.0], [0.0, 0.0, 8.0]]])
    assert not visible(edge_on)[0]
    offscreen = lift(p[None] + 100.0, 10.0)  # footprint outside the image: empty tile rectangle
    assert not visible(offscreen)[0]
    ok, proj = visible(base)
    # radius_px = ceil(max_k |p_k - p_bar|): p_bar = (6, 6.6667); farthest vertex (4, 12): sqrt(4 + 28.44) = 5.70
    assert int(proj.radius_px[0]) == 6
    assert_close(proj.normals[0], torch.tensor([0.0, 0.0, -1.0]), **tol("splat_oracle", torch.float32))


def test_eval_sh():
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(5, 3, generator=g)
    sh = torch.zeros(5, 16, 3)
    sh[:, 0] = rgb_to_sh(rgb)
    dirs = torch.randn(5, 3, generator=g)
    for degree in range(4):  # higher bands are zero: the DC colour at any degree
        assert_close(eval_sh(degree, sh, dirs), rgb, **tol("splat_oracle", torch.float32))
    # degree 1 along +z: rgb = C0 c0 + C1 z c2 + 0.5 (3DGS sign convention)
    sh1 = torch.zeros(1, 4, 3)
    sh1[0, 2] = torch.tensor([0.5, -0.5, 0.0])
    out = eval_sh(1, sh1, torch.tensor([[0.0, 0.0, 2.0]]))
    assert_close(
        out,
        torch.tensor([[0.5 + 0.4886025 * 0.5, 0.5 - 0.4886025 * 0.5, 0.5]]),
        **tol("splat_oracle", torch.float32),
    )
    # clamped channels get zero gradient
    sh_neg = torch.full((1, 1, 3), -5.0, requires_grad=True)
    eval_sh(0, sh_neg, torch.ones(1, 3)).sum().backward()
    assert float(sh_neg.grad.abs().max()) == 0.0
    assert abs(SH_C0 - 0.28209479) < 1e-8
    with pytest.raises(ValueError, match="degree"):
        eval_sh(4, torch.zeros(1, 25, 3), torch.ones(1, 3))
    with pytest.raises(ValueError, match="sh must have shape"):
        eval_sh(2, torch.zeros(1, 4, 3), torch.ones(1, 3))


def test_capture_inputs_of_failing_warp_call(monkeypatch, tmp_path):
    from recon.renderers.splat import warp_impl

    def broken(*args, **kwargs):
        raise RuntimeError("simulated kernel failure")

    monkeypatch.setattr(warp_impl, "rasterize_forward", broken)
    monkeypatch.setenv("RECON_CAPTURE_INPUTS", str(tmp_path))
    with pytest.raises(RuntimeError, match="simulated"):
        rasterize_triangles(*_args(), camera(16, 16), backend="warp")
    saved = list(tmp_path.glob("splat_rasterize_*.pt"))
    assert len(saved) == 1
    data = torch.load(saved[0])
    assert data["params"].shape == (2, 19) and data["geometry"].tolist() == [16, 16, 2, 2, 0]
