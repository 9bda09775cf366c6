"""COLMAP loader: text and binary models, every camera model, points, normalisation without rotation."""

import numpy as np
import pytest
import torch

from recon.core.transforms import apply_T, invert_T, transform_pose
from recon.datasets import DatasetError, dataset_info, detect_format, load_dataset
from recon.datasets.colmap import CAMERA_MODELS, find_model, lens_from_colmap, read_model
from tests.tolerances import assert_close, tol

W, H = 20, 16

# Parameters of each COLMAP model (f/fx fy, cx, cy, then the model's extra terms) for the parse tests.
MODEL_PARAMS = {
    "SIMPLE_PINHOLE": [18.0, 10.1, 7.9],
    "PINHOLE": [18.0, 19.0, 10.1, 7.9],
    "SIMPLE_RADIAL": [18.0, 10.1, 7.9, 0.05],
    "RADIAL": [18.0, 10.1, 7.9, 0.05, -0.01],
    "OPENCV": [18.0, 19.0, 10.1, 7.9, 0.05, -0.01, 0.001, -0.002],
    "OPENCV_FISHEYE": [18.0, 19.0, 10.1, 7.9, 0.05, -0.01, 0.002, -0.001],
    "FULL_OPENCV": [18.0, 19.0, 10.1, 7.9, 0.05, -0.01, 0.001, -0.002, 0.003, 0.01, 0.002, 0.0005],
    "FOV": [18.0, 19.0, 10.1, 7.9, 0.9],
    "SIMPLE_RADIAL_FISHEYE": [18.0, 10.1, 7.9, 0.05],
    "RADIAL_FISHEYE": [18.0, 10.1, 7.9, 0.05, -0.01],
    "THIN_PRISM_FISHEYE": [18.0, 19.0, 10.1, 7.9, 0.05, -0.01, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006],
    "RAD_TAN_THIN_PRISM_FISHEYE": [18.0, 19.0, 10.1, 7.9] + [0.01 * k for k in range(1, 13)],
}
# recon's (camera_model, distortion) for each model recon can undistort.
EXPECTED_LENS = {
    "SIMPLE_PINHOLE": ("pinhole", None),
    "PINHOLE": ("pinhole", None),
    "SIMPLE_RADIAL": ("opencv", [0.05, 0, 0, 0, 0, 0, 0, 0]),
    "RADIAL": ("opencv", [0.05, -0.01, 0, 0, 0, 0, 0, 0]),
    "OPENCV": ("opencv", [0.05, -0.01, 0.001, -0.002, 0, 0, 0, 0]),
    "OPENCV_FISHEYE": ("opencv_fisheye", [0.05, -0.01, 0.002, -0.001]),
    "FULL_OPENCV": ("opencv", [0.05, -0.01, 0.001, -0.002, 0.003, 0.01, 0.002, 0.0005]),
    "SIMPLE_RADIAL_FISHEYE": ("opencv_fisheye", [0.05, 0, 0, 0]),
    "RADIAL_FISHEYE": ("opencv_fisheye", [0.05, -0.01, 0, 0]),
}


def _pinhole_models(K: torch.Tensor) -> list[tuple[str, int, int, list[float]]]:
    return [
        ("PINHOLE", W, H, [float(K[i, 0, 0]), float(K[i, 1, 1]), float(K[i, 0, 2]), float(K[i, 1, 2])])
        for i in range(len(K))
    ]


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_round_trip_known_cameras_and_points(tmp_path, dw, binary):
    K, T = dw.random_cameras(10, width=W, height=H, seed=11)
    points = np.random.default_rng(0).normal(size=(50, 3))
    dw.colmap(tmp_path, _pinhole_models(K), T, list(range(10)), binary=binary, points=points)
    assert detect_format(tmp_path) == "colmap"
    ds = load_dataset(tmp_path)
    info = dataset_info(ds)
    assert info["points3d"] == 50
    assert [c["name"] for c in info["splits"]["test"]] == ["images/img_000.png", "images/img_008.png"]
    order = [0, 8, 1, 2, 3, 4, 5, 6, 7, 9]
    cams = info["splits"]["test"] + info["splits"]["train"]
    K_got = torch.tensor([c["K"] for c in cams], dtype=torch.float64)
    T_got = torch.tensor([c["T_cam_world"] for c in cams], dtype=torch.float64)
    assert_close(K_got, K[order], **tol("loader", torch.float64), name="K")
    assert_close(T_got, T[order], **tol("loader", torch.float64), name="T_cam_world")
    # Normalisation: translation + uniform scale only, cameras inside the unit sphere, one camera on it.
    S = ds.normalization
    s = float(S[0, 0])
    assert_close(S[:3, :3], s * torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-12, name="no rotation")
    centers = ds.cameras("train").centers().double()
    assert float(centers.norm(dim=-1).max()) <= 1 + 1e-5
    all_centers = apply_T(S, invert_T(T)[:, :3, 3])
    assert float(all_centers.norm(dim=-1).max()) == pytest.approx(1.0, abs=1e-9)
    assert_close(
        ds.cameras("test").T_cam_world, transform_pose(T[[0, 8]], S).float(), **tol("camera", torch.float32)
    )
    assert_close(
        ds.points3d.double(), apply_T(S, torch.from_numpy(points)), rtol=0, atol=1e-6, name="points3d"
    )
    assert ds.points3d_rgb.shape == (50, 3) and float(ds.points3d_rgb.max()) <= 1.0
    assert bool((ds.scene_box[0] < ds.scene_box[1]).all())


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_every_camera_model_parses(tmp_path, dw, binary):
    assert set(MODEL_PARAMS) == {name for name, _ in CAMERA_MODELS.values()}
    cameras = [(m, W, H, p) for m, p in MODEL_PARAMS.items()]
    _, T = dw.random_cameras(len(cameras), width=W, height=H, seed=12)
    dw.colmap(tmp_path, cameras, T, list(range(len(cameras))), binary=binary, write_images=False)
    parsed, images, points = read_model(find_model(tmp_path))
    assert points is not None and len(points.xyz) == 0
    assert len(images) == len(cameras)
    for cid, (model, params) in enumerate(MODEL_PARAMS.items(), start=1):
        cam = parsed[cid]
        assert (cam.model, cam.width, cam.height) == (model, W, H)
        assert cam.params == pytest.approx(params, abs=1e-12)
        if model in EXPECTED_LENS:
            K, lens, dist = lens_from_colmap(cam, "test")
            assert (lens, None if dist is None else dist.tolist()) == (
                EXPECTED_LENS[model][0],
                None
                if EXPECTED_LENS[model][1] is None
                else pytest.approx(EXPECTED_LENS[model][1], abs=1e-12),
            )
            assert float(K[0, 0]) == 18.0 and float(K[1, 1]) == (
                18.0 if model.startswith(("SIMPLE", "RADIAL")) else 19.0
            )
            assert (float(K[0, 2]), float(K[1, 2])) == (10.1, 7.9)
        else:
            with pytest.raises(DatasetError, match=f"{model}.*cannot undistort"):
                lens_from_colmap(cam, "test")


def test_unsupported_model_is_a_clear_error_at_load(tmp_path, dw):
    _, T = dw.random_cameras(2, width=W, height=H)
    dw.colmap(tmp_path, [("FOV", W, H, MODEL_PARAMS["FOV"])], T, [0, 0], binary=True)
    with pytest.raises(DatasetError, match=r"camera 1 in .*cameras.bin uses COLMAP camera model FOV"):
        load_dataset(tmp_path)


def test_thin_prism_without_prism_terms_maps_to_fisheye(tmp_path, dw):
    _, T = dw.random_cameras(2, width=W, height=H)
    params = [18.0, 19.0, 10.1, 7.9, 0.05, -0.01, 0.0, 0.0, 0.003, 0.004, 0.0, 0.0]
    dw.colmap(tmp_path, [("THIN_PRISM_FISHEYE", W, H, params)], T, [0, 0], binary=False)
    cam = dataset_info(tmp_path)["splits"]["train"][0]
    assert cam["camera_model"] == "opencv_fisheye" and cam["distortion"] == pytest.approx(
        [0.05, -0.01, 0.003, 0.004]
    )


def test_images_of_another_size_rescale_K(tmp_path, dw):
    K, T = dw.random_cameras(2, width=W, height=H, seed=13)
    cams = [
        (
            "PINHOLE",
            2 * W,
            2 * H,
            [2 * float(K[0, 0, 0]), 2 * float(K[0, 1, 1]), 2 * float(K[0, 0, 2]), 2 * float(K[0, 1, 2])],
        )
    ]
    dw.colmap(tmp_path, cams, T, [0, 0], binary=True, write_images=False)
    for i in range(2):
        dw.write_png(tmp_path / "images" / f"img_{i:03d}.png", W, H)
    info = dataset_info(tmp_path)
    assert info["splits"]["train"][0]["width"] == W
    assert_close(
        torch.tensor(info["splits"]["train"][0]["K"], dtype=torch.float64),
        K[0],
        **tol("loader", torch.float64),
    )
    dw.write_png(tmp_path / "images" / "img_001.png", W, W)  # wrong aspect ratio
    with pytest.raises(DatasetError, match=r"img_001.png is 20x20: expected 40x32"):
        load_dataset(tmp_path)


def test_radial_distortion_is_removed_up_front(tmp_path, dw):
    """A textured plane imaged through a RADIAL lens comes back as the pinhole image of the plane."""
    from PIL import Image

    w, h, f, k1, k2, depth = 64, 48, 40.0, -0.2, 0.03, 1.0
    cx, cy = w / 2, h / 2
    T = torch.eye(4, dtype=torch.float64)[None].repeat(2, 1, 1)

    def texture(x: np.ndarray, y: np.ndarray) -> np.ndarray:  # a smooth pattern on the plane z = depth
        return 0.5 + 0.4 * np.sin(6.0 * x * depth) * np.cos(5.0 * y * depth)

    # Distorted image: pixel u_d sees normalised (x, y) with r_d = r (1 + k1 r^2 + k2 r^4), solved by Newton.
    jj, ii = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    xd, yd = (ii - cx) / f, (jj - cy) / f
    rd = np.hypot(xd, yd)
    r = rd.copy()
    for _ in range(30):
        r -= (r * (1 + k1 * r**2 + k2 * r**4) - rd) / (1 + 3 * k1 * r**2 + 5 * k2 * r**4)
    scale = np.where(rd > 0, r / np.maximum(rd, 1e-12), 1.0)
    distorted = texture(xd * scale, yd * scale)
    dw.colmap(tmp_path, [("RADIAL", w, h, [f, cx, cy, k1, k2])], T, [0, 0], binary=True, write_images=False)
    (tmp_path / "images").mkdir()
    for i in range(2):
        Image.fromarray((distorted * 255).round().astype(np.uint8)).convert("RGB").save(
            tmp_path / "images" / f"img_{i:03d}.png"
        )
    ds = load_dataset(tmp_path)
    assert ds.camera("train", 0).camera_model == "pinhole"
    got = ds.image("train", 0)[..., 0].double().numpy()
    expected = texture((ii - cx) / f, (jj - cy) / f)
    inner = (slice(6, h - 6), slice(6, w - 6))  # borders may see outside the distorted image
    # 8-bit quantisation (2e-3) + bilinear interpolation of a smooth pattern
    assert np.abs(got[inner] - expected[inner]).max() < 0.01
    # Without undistortion the error is far larger: the test can fail.
    assert np.abs(distorted[inner] - expected[inner]).max() > 0.1


def test_images_n_only_and_test_every(tmp_path, dw):
    """Only images_4/ (cameras state the 4x larger size), one camera per image, a 5-image holdout."""
    K, T = dw.random_cameras(10, width=4 * W, height=4 * H, seed=13)
    cams = [("PINHOLE", 4 * W, 4 * H, params) for _, _, _, params in _pinhole_models(K)]
    dw.colmap(tmp_path, cams, T, list(range(10)), binary=True, write_images=False)
    for i in range(10):
        dw.write_png(tmp_path / "images_4" / f"img_{i:03d}.png", W, H, seed=i)
    ds = load_dataset(tmp_path, test_every=5)
    assert ds.downscale == 4.0 and "every 5th image" in ds.split_rule
    assert [f.name for f in ds.splits["test"]] == ["images_4/img_000.png", "images_4/img_005.png"]
    K_small = K[5].clone()
    K_small[:2] /= 4
    assert_close(ds.splits["test"][1].K, K_small, **tol("loader", torch.float64), name="K")
    assert (ds.camera("test", 1).width, ds.camera("test", 1).height) == (W, H)
    assert_close(ds.cameras("test").T_cam_world, transform_pose(T[[0, 5]], ds.normalization).float(),
                 **tol("camera", torch.float32))  # fmt: skip


def test_rgba_images_composite_over_the_stated_background(tmp_path, dw):
    from recon.datasets import format_info

    K, T = dw.random_cameras(3, width=W, height=H, seed=14)
    dw.colmap(tmp_path, _pinhole_models(K), T, [0, 1, 2], binary=False, write_images=False)
    rgba = [
        dw.write_png(tmp_path / "images" / f"img_{i:03d}.png", W, H, seed=i, mode="RGBA") for i in range(3)
    ]
    ds = load_dataset(tmp_path, background=(1.0, 0.5, 0.0))
    px = torch.from_numpy(rgba[1].astype(np.float64) / 255.0)
    expected = px[..., :3] * px[..., 3:] + torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64) * (
        1 - px[..., 3:]
    )
    assert_close(ds.image("train", 0).double(), expected, rtol=0, atol=1e-6, name="composited")
    assert_close(ds.alpha("train", 0).double(), px[..., 3:], rtol=0, atol=1e-6, name="alpha")
    info = dataset_info(ds)
    assert info["background"] == [1.0, 0.5, 0.0] and info["has_alpha"] and info["has_masks"]
    assert "background:    (1, 0.5, 0) (RGBA images composited over it)" in format_info(info)
    assert load_dataset(tmp_path).background.tolist() == [0.0, 0.0, 0.0]  # COLMAP's default: black


@pytest.mark.parametrize("binary", [True, False])
def test_tracks_give_each_frame_its_points_and_sfm_depth_targets(tmp_path, dw, binary):
    """Points placed at known pixel centres and distances of the images that observe them come back as those
    pixels and their camera z (in normalised units); points behind the camera or outside the image are dropped."""
    K, T = dw.random_cameras(10, width=W, height=H, seed=3)
    rng = np.random.default_rng(1)
    points, tracks, expected = [], [], {}
    for image in (1, 2, 3):  # train images (0 and 8 are the test split)
        cols, rows = rng.integers(0, W, 4), rng.integers(0, H, 4)
        dist = rng.uniform(1.0, 3.0, 4)
        centres = torch.tensor(np.stack([cols + 0.5, rows + 0.5, np.ones(4)], -1))
        rays = centres @ torch.linalg.inv(K[image]).T
        rays = rays / rays.norm(dim=-1, keepdim=True)  # unit rays, camera frame
        x_cam = rays * torch.tensor(dist)[:, None]
        world = apply_T(invert_T(T[image]), x_cam)
        points += world.tolist()
        tracks += [[image, 5]] * 4  # image 5 observes them too, though they may fall outside its view
        expected[image] = (np.stack([cols, rows], -1), x_cam[:, 2])
    behind = apply_T(invert_T(T[1]), torch.tensor([[0.0, 0.0, -2.0]], dtype=torch.float64))
    outside = apply_T(invert_T(T[1]), torch.tensor([[1e3, 0.0, 1.0]], dtype=torch.float64))
    points += behind.tolist() + outside.tolist()
    tracks += [[1], [1]]
    dw.colmap(tmp_path, _pinhole_models(K), T, list(range(10)), binary=binary, points=np.array(points),
              tracks=tracks)  # fmt: skip
    ds = load_dataset(tmp_path)
    assert ds.has_sfm_depth
    s = ds.scale
    train_names = [f.name for f in ds.splits["train"]]
    for image, (pixels, z) in expected.items():
        i = train_names.index(f"images/img_{image:03d}.png")
        frame = ds.frame("train", i)
        assert frame.points3d_ids is not None
        assert len(frame.points3d_ids) == (6 if image == 1 else 4)
        got_pixels, got_z = ds.sfm_depth("train", i)
        assert got_pixels.tolist() == pixels.tolist()  # behind/outside dropped, order kept
        assert_close(got_z.double(), z * s, rtol=1e-5, atol=1e-6, name="camera z")
    empty = ds.sfm_depth("train", train_names.index("images/img_004.png"))  # observes nothing
    assert empty is None
    test_frame = ds.frame("test", 0)
    assert test_frame.points3d_ids is not None and len(test_frame.points3d_ids) == 0


def test_no_tracks_no_sfm_depth(tmp_path, dw):
    K, T = dw.random_cameras(10, width=W, height=H, seed=3)
    dw.colmap(tmp_path, _pinhole_models(K), T, list(range(10)), binary=True, points=np.zeros((3, 3)),
              tracks=[[]] * 3)  # fmt: skip
    ds = load_dataset(tmp_path)
    assert not ds.has_sfm_depth and ds.sfm_depth("train", 0) is None
