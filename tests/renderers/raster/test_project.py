"""The shared set-up of ``rasterize``: near-plane clipping of camera-frame triangles."""

import torch

from recon.renderers.raster.project import clip_near, clip_near_general


def test_fast_path_equals_general_clipping_when_nothing_crosses(gen):
    tri = torch.randn(2, 50, 3, 3, generator=gen)
    tri[..., 2] = tri[..., 2].abs() + 0.5  # every corner in front of z_near = 0.1
    fast, count_fast = clip_near(tri, 0.1)
    general, count_general = clip_near_general(tri, 0.1)
    assert torch.equal(fast, general) and torch.equal(count_fast, count_general)
    assert bool((count_fast == 3).all())


def test_clipped_polygon_corners_and_counts():
    # Triangle A (0, 0, 1), B (2, 0, 1), C (0, 0, -1) with z_near = 0.5: edge B C is cut at t = 0.25 -> (1.5, 0,
    # 0.5), edge C A at t = 0.75 -> (0, 0, 0.5): quad A, B, (1.5, 0, 0.5), (0, 0, 0.5). One corner in front gives a
    # triangle, none gives count 0.
    tri = torch.tensor([[[[0.0, 0.0, 1.0], [2.0, 0.0, 1.0], [0.0, 0.0, -1.0]]]])
    corners, count = clip_near(tri, 0.5)
    expected = torch.tensor([[0.0, 0.0, 1.0], [2.0, 0.0, 1.0], [1.5, 0.0, 0.5], [0.0, 0.0, 0.5]])
    assert int(count) == 4 and torch.allclose(corners[0, 0], expected)
    one_in = tri.clone()
    one_in[..., 1, 2] = -1.0
    corners, count = clip_near(one_in, 0.5)
    # A stays; A -> B cut at t = 0.25 -> (0.5, 0, 0.5); C -> A cut at (0, 0, 0.5); slot 3 repeats A.
    expected = torch.tensor([[0.0, 0.0, 1.0], [0.5, 0.0, 0.5], [0.0, 0.0, 0.5], [0.0, 0.0, 1.0]])
    assert int(count) == 3 and torch.allclose(corners[0, 0], expected)
    assert int(clip_near(tri - torch.tensor([0.0, 0.0, 3.0]), 0.5)[1]) == 0
