"""UV atlas: spherical map, seam and pole fixes, circular padding, decimation (spec superquadrics.md 4)."""

import math

import pytest
import torch

from recon.scenes.superquadrics.tessellation import icosphere, uv_sphere
from recon.scenes.superquadrics.uv import (
    build_atlas,
    decimate_texture,
    pad_texture,
    spherical_uv,
    unpad_texture,
)

BASES = {
    "ico1": lambda: icosphere(1),
    "ico2": lambda: icosphere(2),
    "ico3": lambda: icosphere(3),
    "uv": lambda: uv_sphere(8, 16),
}


def test_spherical_uv_oracle():
    # +z: atan2(0, 1) = 0 -> u = 0.5, y = 0 -> v = acos(0)/π = 0.5 ; +x: u = (π/2 + π)/2π = 0.75 ; north pole v ~ 1
    pts = torch.tensor(
        [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -2.0, 0.0]], dtype=torch.float64
    )
    uv = spherical_uv(pts)
    torch.testing.assert_close(uv[:2], torch.tensor([[0.5, 0.5], [0.75, 0.5]], dtype=torch.float64))
    assert float(uv[2, 1]) == pytest.approx(1.0, abs=1e-3) and float(uv[3, 1]) == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("name", list(BASES))
def test_every_face_is_continuous_in_u_after_the_fixes(name):
    base = BASES[name]()
    raw = build_atlas(base, fix=False)
    raw_u = raw.uv[raw.faces_uv][..., 0]
    assert float((raw_u.amax(-1) - raw_u.amin(-1)).max()) > 0.5, (
        "the plain map has seam faces: test discriminates"
    )
    atlas = build_atlas(base)
    u = atlas.uv[atlas.faces_uv][..., 0]
    assert float((u.amax(-1) - u.amin(-1)).max()) < 0.5
    # both index arrays describe the same faces
    assert torch.equal(atlas.vertex_index[atlas.faces_uv], base.faces)
    assert torch.equal(atlas.faces, base.faces)


@pytest.mark.parametrize("name", list(BASES))
def test_duplicates_are_shifted_copies_or_pole_splits(name):
    base = BASES[name]()
    atlas = build_atlas(base)
    v_count = base.vertices.shape[0]
    plain = spherical_uv(base.vertices)
    torch.testing.assert_close(atlas.uv[:v_count], plain)
    dup = atlas.uv[v_count:]
    orig = plain[atlas.vertex_index[v_count:]]
    at_pole = (orig[:, 1] > 0.99) | (orig[:, 1] < 0.01)
    shift = dup[~at_pole, 0] - orig[~at_pole, 0]
    assert bool(((shift - 1).abs() < 1e-12).logical_or((shift + 1).abs() < 1e-12).all()), (
        "seam copies move by ±1"
    )
    torch.testing.assert_close(dup[:, 1], orig[:, 1])
    # every pole UV vertex in use belongs to exactly one face (split per face)
    used, counts = atlas.faces_uv.unique(return_counts=True)
    pole_used = used[(atlas.uv[used, 1] > 0.99) | (atlas.uv[used, 1] < 0.01)]
    assert pole_used.numel() > 0
    assert bool((counts[torch.isin(used, pole_used)] == 1).all())


def test_pole_u_is_the_mean_of_the_face():
    atlas = build_atlas(icosphere(1))
    corners = atlas.uv[atlas.faces_uv]  # (F, 3, 2)
    pole = (corners[..., 1] > 0.99) | (corners[..., 1] < 0.01)
    faces = pole.any(-1)
    others = (corners[faces][..., 0] * (~pole[faces])).sum(-1) / 2
    torch.testing.assert_close(corners[faces][..., 0][pole[faces]], others)


@pytest.mark.parametrize("name", list(BASES))
def test_padding_covers_the_atlas(name):
    t = 256
    atlas = build_atlas(BASES[name](), texture_size=t)
    used = atlas.uv[atlas.faces_uv.unique()]
    assert atlas.pad_left == max(0, math.ceil(-float(used[:, 0].min()) * t - 1e-9))
    assert atlas.pad_right == max(0, math.ceil((float(used[:, 0].max()) - 1) * t - 1e-9))
    assert atlas.pad_left + atlas.pad_right > 0
    u = atlas.padded_uv()[atlas.faces_uv.unique(), 0]
    assert float(u.min()) >= -1e-12 and float(u.max()) <= 1 + 1e-12
    # a UV u in the unpadded texture lands on padded texel coordinate u*T + p_left
    width = t + atlas.pad_left + atlas.pad_right
    torch.testing.assert_close(atlas.padded_uv()[:, 0] * width, atlas.uv[:, 0] * t + atlas.pad_left)


def test_padding_round_trip_is_circular_wrap():
    gen = torch.Generator().manual_seed(0)
    tex = torch.randn(2, 4, 16, 3, generator=gen)
    p_left, p_right = 3, 5
    padded = pad_texture(tex, p_left, p_right)
    assert padded.shape == (2, 4, 16 + 8, 3)
    idx = (torch.arange(16 + 8) - p_left) % 16
    assert torch.equal(padded, tex[:, :, idx])
    assert torch.equal(unpad_texture(padded, p_left, p_right), tex)
    assert torch.equal(pad_texture(tex, 0, 0), tex)
    with pytest.raises(ValueError, match="padding"):
        pad_texture(tex, 17, 0)


def test_decimation():
    gen = torch.Generator().manual_seed(0)
    tex = torch.rand(3, 16, 24, 3, generator=gen, dtype=torch.float64)
    out = decimate_texture(tex, 8)
    assert out.shape == tex.shape
    # each 8x8 block holds its mean, so the whole image keeps its mean and decimation is idempotent
    block = tex[1, 8:16, 16:24].mean(dim=(0, 1))
    torch.testing.assert_close(out[1, 8:16, 16:24], block.expand(8, 8, 3))
    torch.testing.assert_close(out.mean(dim=(1, 2)), tex.mean(dim=(1, 2)))
    torch.testing.assert_close(decimate_texture(out, 8), out)
    torch.testing.assert_close(decimate_texture(tex[0], 8), out[0])
    with pytest.raises(ValueError, match="multiple"):
        decimate_texture(torch.zeros(10, 16, 3), 8)
