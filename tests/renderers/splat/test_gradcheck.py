"""Float64 gradcheck of the dense reference (spec 15): incenter_grad=True, o <= 0.9, pixels away from kinks."""

import pytest
import torch

from recon.renderers.splat import project_triangles, rasterize_triangles
from recon.renderers.splat.constants import ALPHA_MIN
from recon.renderers.splat.ref import window_alpha
from tests.renderers.splat.helpers import camera

KINK_MARGIN_PX = 0.05  # pixels closer than this to an edge or to the arg-max switch of phi are excluded
ALPHA_MARGIN = 2e-3  # ... and those whose alpha is this close to the 1/255 skip threshold


def _tiny_scene(dtype=torch.float64):
    # Three overlapping, tilted triangles (inradius 2-3 px at f = 30) at depths ~2, 2.5, 3.
    verts = torch.tensor(
        [
            [[-0.3, -0.25, 2.0], [0.3, -0.2, 2.1], [0.0, 0.3, 1.9]],
            [[-0.1, -0.3, 2.5], [0.35, 0.05, 2.4], [-0.2, 0.25, 2.6]],
            [[-0.35, 0.0, 3.0], [0.1, -0.35, 3.1], [0.25, 0.3, 2.9]],
        ],
        dtype=dtype,
    )
    colors = torch.tensor([[0.9, 0.2, 0.1], [0.1, 0.8, 0.3], [0.2, 0.3, 0.9]], dtype=dtype)
    opacities = torch.tensor([0.6, 0.9, 0.75], dtype=dtype)
    sigmas = torch.tensor([0.8, 1.5, 2.2], dtype=dtype)
    return verts, colors, opacities, sigmas


def _safe_pixels(verts, colors, opacities, sigmas, cam):
    proj = project_triangles(verts, colors, opacities, sigmas, cam, incenter_grad=True)
    ys, xs = torch.meshgrid(torch.arange(cam.height), torch.arange(cam.width), indexing="ij")
    pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).to(verts.dtype) + 0.5
    L = (proj.lines[None, :, :, :2] * pix[:, None, None, :]).sum(-1) + proj.lines[None, :, :, 2]  # (Q, N, 3)
    top2 = L.topk(2, dim=-1).values
    near_edge = (L.abs() < KINK_MARGIN_PX).any(-1)
    near_switch = (top2[..., 0] - top2[..., 1]).abs() < KINK_MARGIN_PX
    alpha, _ = window_alpha(proj.lines, proj.inv_phi_s, proj.sigmas, proj.opacities, pix)
    near_skip = (alpha - ALPHA_MIN).abs() < ALPHA_MARGIN
    bad = ((near_edge | near_switch) & proj.visible[None]) | near_skip
    return (~bad.any(-1)).reshape(cam.height, cam.width)


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: intra-op threads only add synchronisation (10x slower on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_gradcheck_reference_float64(one_torch_thread):
    verts, colors, opacities, sigmas = _tiny_scene()
    cam = camera(12, 10, focal=30.0, dtype=torch.float64)
    mask = _safe_pixels(verts, colors, opacities, sigmas, cam)
    assert int(mask.sum()) > 40
    bg = torch.tensor([0.1, 0.3, 0.2], dtype=torch.float64)

    # A fixed random projection of all outputs to 8 numbers keeps the analytical Jacobian to 8 backward passes.
    n_out = int(mask.sum()) * 9
    weights = torch.randn(8, n_out, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def outputs(v, c, o, s, b):
        out = rasterize_triangles(
            v, c, o, s, cam, background=b, backend="torch", incenter_grad=True, compute_distortion=True
        )
        return [x[0][mask] for x in (out.rgb, out.alpha, out.depth, out.normals, out.distortion)]

    def render(v, c, o, s, b):
        return weights @ torch.cat([x.reshape(-1) for x in outputs(v, c, o, s, b)])

    probe = outputs(verts, colors, opacities, sigmas, bg)
    assert float(probe[1].max()) > 0.5  # the safe pixels include well-covered ones
    inputs = [t.clone().requires_grad_() for t in (verts, colors, opacities, sigmas, bg)]
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_incenter_grad_flag_changes_only_the_incenter_path():
    # With incenter_grad=False, 1/phi(s) is detached: the forward is identical, vertex gradients differ.
    verts, colors, opacities, sigmas = _tiny_scene()
    cam = camera(12, 10, focal=30.0, dtype=torch.float64)
    grads = []
    for flag in (False, True):
        v = verts.clone().requires_grad_()
        out = rasterize_triangles(v, colors, opacities, sigmas, cam, backend="torch", incenter_grad=flag)
        out.rgb.sum().backward()
        grads.append((out.rgb.detach(), v.grad))
    assert torch.equal(grads[0][0], grads[1][0])
    assert float((grads[0][1] - grads[1][1]).abs().max()) > 1e-6
    proj = project_triangles(verts, colors, opacities, sigmas, cam, incenter_grad=False)
    assert not proj.inv_phi_s.requires_grad or proj.inv_phi_s.grad_fn is None
