"""Warp vs torch reference of the shading ops: forward outputs and gradients (random cotangents), CPU and CUDA."""

import pytest
import torch

from recon.renderers.raster import shading_api as shading
from tests.renderers.raster._shading_scenes import brute_rasterize, camera, random_mesh
from tests.tolerances import assert_close, tol

WIDTH, HEIGHT = 20, 14
# Batch shapes (cameras, width, height): two cameras, and one camera with odd sizes and a non-square image.
SHAPES = [(2, WIDTH, HEIGHT), (1, 13, 7)]


def _scene(seed: int, *, layers: int = 4, blur_sq: float = 2.0, shape=SHAPES[0]):
    gen = torch.Generator().manual_seed(seed)
    vertices, faces = random_mesh(gen, 14)
    cams, width, height = shape
    frags = brute_rasterize(vertices, faces, camera(width, height, cams=cams), layers=layers, blur_sq=blur_sq)
    covered = frags.covered()
    # Drawn and empty slots, and pixels with several layers: otherwise the comparison proves little.
    assert (
        bool(covered[..., 0].any())
        and not bool(covered[..., 0].all())
        and (layers == 1 or bool(covered[..., 1].any()))
    )
    return gen, vertices, faces, frags


def _fragments_on(frags, device, *, grad: bool):
    out = type(frags)(
        pix_to_face=frags.pix_to_face.to(device),
        bary=frags.bary.detach().to(device).requires_grad_(grad),
        dists=frags.dists.detach().to(device).requires_grad_(grad),
        depth=frags.depth.detach().to(device),
    )
    return out


def _compare(run, inputs: list[torch.Tensor], device: str, gen: torch.Generator, name: str) -> None:
    """Run ``run(*leaves, backend)`` on both backends; compare outputs and input gradients."""
    results = {}
    for backend in ("torch", "warp"):
        leaves = [t.detach().to(device).requires_grad_(t.requires_grad) for t in inputs]
        out = run(*leaves, backend=backend)
        outs = out if isinstance(out, tuple) else (out,)
        results[backend] = (outs, leaves)
    outs_ref, leaves_ref = results["torch"]
    outs_fast, leaves_fast = results["warp"]
    for i, (o_fast, o_ref) in enumerate(zip(outs_fast, outs_ref, strict=True)):
        assert_close(o_fast, o_ref, **tol("shading_fwd", torch.float32), name=f"{name} output {i}")
    cotangents = [torch.randn(o.shape, generator=gen).to(device) for o in outs_ref]
    wanted = [i for i, t in enumerate(leaves_ref) if t.requires_grad]
    grads = {}
    for backend, (outs, leaves) in (("torch", results["torch"]), ("warp", results["warp"])):
        total = sum((o * v).sum() for o, v in zip(outs, cotangents, strict=True))
        grads[backend] = torch.autograd.grad(total, [leaves[i] for i in wanted], allow_unused=True)
    for i, g_fast, g_ref in zip(wanted, grads["warp"], grads["torch"], strict=True):
        assert g_ref is not None and g_fast is not None, f"{name}: input {i} got no gradient"
        assert float(g_ref.abs().max()) > 0, f"{name}: input {i} has an all-zero reference gradient"
        assert_close(g_fast, g_ref, **tol("shading_bwd", torch.float32), name=f"{name} grad of input {i}")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("per_corner", [False, True])
def test_interpolate_parity(device, per_corner, shape):
    gen, vertices, faces, frags = _scene(1, shape=shape)
    attrs = (
        torch.randn(len(faces), 3, 5, generator=gen)
        if per_corner
        else torch.randn(len(vertices), 5, generator=gen)
    )
    attrs.requires_grad_(True)
    frags_dev = _fragments_on(frags, device, grad=True)

    def run(attributes, bary, *, backend):
        f = type(frags_dev)(frags_dev.pix_to_face, bary, frags_dev.dists, frags_dev.depth)
        return shading.interpolate(attributes, f, faces.to(device), backend=backend)

    _compare(run, [attrs, frags_dev.bary], device, gen, "interpolate")


@pytest.mark.parametrize(("wrap_u", "mip_level"), [(False, None), (True, 0), (False, 1), (True, 2)])
def test_sample_texture_parity(device, wrap_u, mip_level):
    gen, _, faces, frags = _scene(2)
    textures = torch.rand(3, 9, 12, 4, generator=gen, requires_grad=True)
    # uv partly outside [0, 1] (clamp / wrap paths) and never on an exact texel boundary.
    uv = (torch.rand(*frags.pix_to_face.shape, 2, generator=gen) * 1.4 - 0.2).requires_grad_(True)
    face_to_texture = torch.randint(0, 3, (len(faces),), generator=gen)
    frags_dev = _fragments_on(frags, device, grad=False)

    def run(tex, uv_, *, backend):
        return shading.sample_texture(
            tex,
            uv_,
            frags_dev,
            face_to_texture.to(device),
            mip_level=mip_level,
            wrap_u=wrap_u,
            backend=backend,
        )

    _compare(run, [textures, uv], device, gen, "sample_texture")


@pytest.mark.parametrize(
    ("mode", "sigma", "background", "with_opacities"),
    [
        ("over", 0.7, "vector", True),
        ("reference", 0.7, "image", True),
        ("over", 0.3, None, False),
        ("reference", 0.0, "vector", True),
    ],
)
def test_soft_composite_parity(device, mode, sigma, background, with_opacities):
    gen, _, faces, frags = _scene(3)
    colors = torch.rand(*frags.pix_to_face.shape, 3, generator=gen, requires_grad=True)
    opacities = torch.rand(len(faces), generator=gen) * 0.8 + 0.1
    opacities[:3] = 1.0  # opaque faces: a_k = 1 inside, the backward must not divide by 1 - a_k
    opacities.requires_grad_(True)
    shape = frags.pix_to_face.shape
    bg = {
        "vector": torch.rand(3, generator=gen),
        "image": torch.rand(*shape[:3], 3, generator=gen),
        None: None,
    }[background]
    frags_dev = _fragments_on(frags, device, grad=sigma > 0)
    inputs = [frags_dev.dists, colors, opacities] + ([bg.requires_grad_(True)] if bg is not None else [])

    def run(dists, colors_, opacities_, *rest, backend):
        f = type(frags_dev)(frags_dev.pix_to_face, frags_dev.bary, dists, frags_dev.depth)
        return shading.soft_composite(
            f,
            colors_,
            opacities_ if with_opacities else None,
            sigma=sigma,
            background=rest[0] if rest else None,
            mode=mode,
            backend=backend,
        )

    if not with_opacities:
        opacities.requires_grad_(False)
    _compare(run, inputs, device, gen, f"soft_composite[{mode}]")


@pytest.mark.parametrize("shape", SHAPES)
def test_silhouette_parity(device, shape):
    gen, _, faces, frags = _scene(4, shape=shape)
    opacities = (torch.rand(len(faces), generator=gen) * 0.9 + 0.05).requires_grad_(True)
    frags_dev = _fragments_on(frags, device, grad=True)

    def run(dists, opacities_, *, backend):
        f = type(frags_dev)(frags_dev.pix_to_face, frags_dev.bary, dists, frags_dev.depth)
        return shading.silhouette(f, opacities_, sigma=0.8, backend=backend)

    _compare(run, [frags_dev.dists, opacities], device, gen, "silhouette")


@pytest.mark.parametrize(("seed", "shape"), [(5, SHAPES[0]), (6, SHAPES[0]), (7, SHAPES[1])])
def test_antialias_parity(device, seed, shape):
    gen, vertices, faces, frags = _scene(seed, layers=1, blur_sq=0.0, shape=shape)
    cams, width, height = shape
    cam = camera(width, height, cams=cams)
    color = torch.rand(cams, height, width, 3, generator=gen, requires_grad=True)
    vertices = vertices.clone().requires_grad_(True)
    frags_dev = _fragments_on(frags, device, grad=False)

    def run(color_, vertices_, *, backend):
        return shading.antialias(
            color_, frags_dev, vertices_, faces.to(device), cam.to(device), backend=backend
        )

    _compare(run, [color, vertices], device, gen, "antialias")
    changed = shading.antialias(color, frags, vertices, faces, cam, backend="torch") != color
    assert int(changed.any(-1).sum()) > 4  # silhouette pixels were blended


def test_cpu_split_launches_match(monkeypatch):
    # Large CPU launches run as concurrent ranges with private scatter-add buffers; force that path on the small
    # test scenes (3 uneven ranges) and rerun the parity checks of every split kernel.
    from recon.renderers.raster import shading_warp_impl

    monkeypatch.setattr(shading_warp_impl, "MIN_SPLIT", 1)
    monkeypatch.setenv("RECON_WARP_CPU_THREADS", "3")
    assert shading_warp_impl._cpu_workers(torch.zeros(1), 100) == 3
    test_interpolate_parity("cpu", per_corner=False, shape=SHAPES[0])
    test_sample_texture_parity("cpu", wrap_u=True, mip_level=0)
    test_soft_composite_parity("cpu", "over", 0.7, "vector", True)
    test_silhouette_parity("cpu", SHAPES[0])
