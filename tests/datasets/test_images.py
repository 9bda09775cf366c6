"""Lazy decoding, the bounded LRU cache, and downscaling (on the fly or from images_N) that keeps K right."""

import numpy as np
import pytest
import torch
from PIL import Image

from recon.datasets import base as base_module
from recon.datasets import load_dataset
from recon.datasets.images import LRUCache, decode_image, image_header, resize_image
from tests.tolerances import assert_close, tol

W, H = 64, 48  # downscale 4 still leaves the 11 px SSIM minimum


def _blender(tmp_path, dw, n=3):
    K, T = dw.random_cameras(n, width=W, height=H, square_pixels=True, centered=True)
    K[:] = K[0]
    dw.blender(tmp_path, {"train": (K, T), "test": (K[:1], T[:1])}, width=W, height=H)
    return K, T


def test_loading_decodes_nothing_and_images_are_cached(tmp_path, dw, monkeypatch):
    _blender(tmp_path, dw, n=300)
    calls = []
    real = base_module.decode_image
    monkeypatch.setattr(
        base_module, "decode_image", lambda path, **kw: calls.append(path) or real(path, **kw)
    )
    ds = load_dataset(tmp_path)
    assert len(ds.splits["train"]) == 300 and calls == []
    ds.image("train", 5)
    ds.alpha("train", 5)
    ds.image("train", 5)
    assert len(calls) == 1


def test_lru_cache_is_bounded():
    cache = LRUCache(max_bytes=3 * 4 * 100)  # room for three 100-float tensors
    made = []

    def make(k):
        return lambda: made.append(k) or torch.full((100,), float(k))

    for k in range(5):
        cache.get((k,), make(k))
    assert len(cache) == 3 and cache.nbytes == 1200
    cache.get((2,), make(2))  # still cached: no new decode
    cache.get((0,), make(0))  # evicted earlier: decoded again
    assert made == [0, 1, 2, 3, 4, 0]


def test_on_the_fly_downscale_keeps_K_right(tmp_path, dw):
    K, _ = _blender(tmp_path, dw)
    full = load_dataset(tmp_path)
    half = load_dataset(tmp_path, downscale=2)
    cam = half.camera("train", 0)
    assert (cam.width, cam.height) == (W // 2, H // 2)
    K_half = K[0].clone()
    K_half[:2] /= 2
    assert_close(cam.K[0].double(), K_half, **tol("loader", torch.float32))
    # 2x2 box filter of the full-resolution composited image and alpha (compositing is linear in premultiplied
    # colour, so filtering before or after compositing agrees; straight-alpha filtering would not)
    box = full.image("train", 0).reshape(H // 2, 2, W // 2, 2, 3).mean(dim=(1, 3))
    box_alpha = full.alpha("train", 0).reshape(H // 2, 2, W // 2, 2, 1).mean(dim=(1, 3))
    assert_close(half.image("train", 0), box, rtol=0, atol=1e-6)
    assert_close(half.alpha("train", 0), box_alpha, rtol=0, atol=1e-6)
    # a non-integer factor rounds the size and scales x and y by their own ratios
    third = load_dataset(tmp_path, downscale=3).camera("train", 0)
    assert (third.width, third.height) == (21, 16)  # round(64 / 3), round(48 / 3)
    assert float(third.K[0, 0, 0]) == pytest.approx(float(K[0, 0, 0]) * 21 / 64, rel=1e-6)
    assert float(third.K[0, 1, 2]) == pytest.approx(float(K[0, 1, 2]) * 16 / 48, rel=1e-6)
    # the projection of a point at the loaded resolution is the full-resolution one scaled by the size ratio
    p = torch.tensor([[[0.1, -0.2, 0.3]]])
    uv_full, _ = full.camera("train", 0).project(p)
    uv_half, _ = half.camera("train", 0).project(p)
    assert_close(uv_half, uv_full / 2, **tol("camera", torch.float32))


def test_images_n_folder_is_used(tmp_path, dw):
    K, T = dw.random_cameras(3, width=W, height=H, seed=3)
    cams = [
        ("PINHOLE", W, H, [float(K[i, 0, 0]), float(K[i, 1, 1]), float(K[i, 0, 2]), float(K[i, 1, 2])])
        for i in range(3)
    ]
    dw.colmap(tmp_path, cams, T, [0, 1, 2], binary=True)
    small = {
        i: dw.write_png(tmp_path / "images_4" / f"img_{i:03d}.png", W // 4, H // 4, seed=50 + i)
        for i in range(3)
    }
    ds = load_dataset(tmp_path, downscale=4)
    frame = ds.splits["train"][0]
    assert frame.load_path == tmp_path / "images_4" / "img_001.png"
    assert_close(ds.image("train", 0), torch.from_numpy(small[1] / 255.0).float(), rtol=0, atol=1e-6)
    K_small = K[1].clone()
    K_small[:2] /= 4
    assert_close(ds.camera("train", 0).K[0].double(), K_small, **tol("loader", torch.float32))
    # stored-resolution facts (data info) are unchanged by the downscale
    assert (frame.width, frame.height) == (W, H)


def test_decode_modes(tmp_path):
    gray16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "d.png")
    out = decode_image(tmp_path / "d.png")
    assert out.shape == (3, 4, 1) and float(out.max()) == pytest.approx(55000 / 65535)
    Image.fromarray(np.zeros((3, 4, 2), np.uint8), mode="LA").save(tmp_path / "la.png")
    assert image_header(tmp_path / "la.png").has_alpha and decode_image(tmp_path / "la.png").shape == (
        3,
        4,
        4,
    )


def test_resize_nearest_and_area():
    img = torch.arange(16.0).reshape(4, 4, 1)
    assert resize_image(img, 2, 2, nearest=True)[..., 0].tolist() == [[5.0, 7.0], [13.0, 15.0]]
    img01 = img / 16
    assert_close(
        resize_image(img01, 2, 2)[..., 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]) / 16, rtol=0, atol=1e-6
    )


def test_returned_images_are_copies_and_datasets_pickle(tmp_path, dw):
    import pickle

    _blender(tmp_path, dw)
    ds = load_dataset(tmp_path)
    img = ds.image("train", 0)
    img.zero_()
    assert float(ds.image("train", 0).sum()) > 0
    clone = pickle.loads(pickle.dumps(ds))  # DataLoader workers with spawn pickle the dataset
    assert len(clone._cache) == 0 and torch.equal(clone.image("train", 0), ds.image("train", 0))
