"""Depth colour maps and the conversion of render outputs to browser images."""

import numpy as np
import pytest
import torch

from recon.core import RenderOutput
from recon.viewer.colormaps import apply_colormap, depth_to_rgb, normals_to_rgb, output_to_image
from recon.viewer.state import ViewState
from tests.typecheck import assert_rejected

# Reference colours from matplotlib's 256-entry tables (entries 0, 128 and 255), written out so the tests need no
# matplotlib. Turbo is a polynomial fit with up to ~0.13 deviation at the dark ends of the table (see
# colormaps.py); viridis' fit is within 0.015.
TURBO_TABLE = {
    0.0: (0.18995, 0.07176, 0.23217),
    128 / 255: (0.64362, 0.98999, 0.23356),
    1.0: (0.47960, 0.01583, 0.01055),
}
VIRIDIS_TABLE = {
    0.0: (0.267004, 0.004874, 0.329415),
    128 / 255: (0.128729, 0.563265, 0.551229),
    1.0: (0.993248, 0.906157, 0.143936),
}
TOLERANCE = {"turbo": 0.13, "viridis": 0.015}


@pytest.mark.parametrize(("name", "table"), [("turbo", TURBO_TABLE), ("viridis", VIRIDIS_TABLE)])
def test_colormap_matches_table(name, table):
    x = np.array(list(table))
    got = apply_colormap(x, name)
    np.testing.assert_allclose(got, np.array(list(table.values())), atol=TOLERANCE[name])


def test_colormap_shape_and_clipping():
    x = np.linspace(-1.0, 2.0, 12).reshape(3, 4)
    out = apply_colormap(x, "viridis")
    assert out.shape == (3, 4, 3)
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(out[0, 0], apply_colormap(np.array(0.0), "viridis"))  # clipped below
    assert_rejected(lambda: apply_colormap(x, "jet"), match="colormap", argument="name")  # type: ignore[arg-type]


def test_viridis_luminance_increases():
    rgb = apply_colormap(np.linspace(0, 1, 64), "viridis")
    luminance = rgb @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(luminance) > 0)


def test_depth_near_is_low_end_and_background_kept():
    depth = np.array([[1.0, 2.0, 3.0, 0.0]])
    alpha = np.array([[1.0, 1.0, 1.0, 0.0]])
    out = depth_to_rgb(depth, alpha, colormap="viridis", background=(1.0, 0.0, 1.0))
    # Range from the 1st-99th percentile of covered pixels (~1.02 .. 2.98): near end -> map(0), far -> map(1).
    np.testing.assert_allclose(out[0, 0], apply_colormap(np.array(0.0), "viridis"), atol=1e-9)
    np.testing.assert_allclose(out[0, 2], apply_colormap(np.array(1.0), "viridis"), atol=1e-9)
    np.testing.assert_allclose(out[0, 3], (1.0, 0.0, 1.0))


def test_normals_mapping():
    # Unnormalised, alpha-weighted normals: (0, 0, 0.5) at alpha 0.5 -> unit +z -> (0.5, 0.5, 1.0), half over black.
    normals = np.array([[[0.0, 0.0, 0.5], [-2.0, 0.0, 0.0]]])
    alpha = np.array([[0.5, 1.0]])
    out = normals_to_rgb(normals, alpha, background=(0.0, 0.0, 0.0))
    np.testing.assert_allclose(out[0, 0], (0.25, 0.25, 0.5))
    np.testing.assert_allclose(out[0, 1], (0.0, 0.5, 0.5))


def _output(h=4, w=5) -> RenderOutput:
    g = torch.Generator().manual_seed(1)
    return RenderOutput(
        rgb=torch.rand(1, h, w, 3, generator=g),
        alpha=torch.rand(1, h, w, 1, generator=g),
        depth=torch.rand(1, h, w, 1, generator=g) + 1,
        normals=torch.randn(1, h, w, 3, generator=g),
    )


@pytest.mark.parametrize("mode", ["rgb", "depth", "normals", "alpha"])
def test_output_to_image_modes(mode):
    out = _output()
    image = output_to_image(out, ViewState(mode=mode))
    assert image.shape == (4, 5, 3) and image.dtype == np.uint8
    if mode == "rgb":
        np.testing.assert_array_equal(image, (out.rgb[0].numpy() * 255 + 0.5).astype(np.uint8))
    if mode == "alpha":
        np.testing.assert_array_equal(
            image[..., 0], (out.alpha[0, ..., 0].numpy() * 255 + 0.5).astype(np.uint8)
        )


def test_modes_differ_and_missing_maps_raise():
    out = _output()
    images = [output_to_image(out, ViewState(mode=m)) for m in ("rgb", "depth", "normals", "alpha")]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert not np.array_equal(images[i], images[j])
    bare = RenderOutput(rgb=out.rgb, alpha=out.alpha)
    with pytest.raises(ValueError, match="depth"):
        output_to_image(bare, ViewState(mode="depth"))
    with pytest.raises(ValueError, match="normals"):
        output_to_image(bare, ViewState(mode="normals"))
