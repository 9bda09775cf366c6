"""recon data process: structure from motion on rendered views of a known scene, frame picking, bad input."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recon.core.transforms import invert_T
from recon.datasets import DatasetError, load_dataset
from recon.datasets.process import ProcessOptions, process_capture
from recon.datasets.process.frames import extract_video_frames, ingest_images, laplacian_variance
from recon.datasets.process.sfm import _check_registered

VIEWS = 24  # a ring of views 15 degrees apart at 20 degrees elevation: each view overlaps its neighbours well
RESOLUTION = 320  # SIFT finds enough blobs of the rock's texture at this size; SfM takes ~5 s on an idle core
# Object-centred views with a 40 degree field of view constrain rotation against translation (and the focal
# length) only weakly: over 8 variants of this scene (texture seeds, known or self-calibrated focal) SfM was off by
# 0.6-1.3 degrees and 0.7-1.9% of the camera distance. A wrong registration is off by tens of degrees and
# tens of percent, so these margins (~3x the worst measurement) separate the two on any CPU.
MAX_ROTATION_ERROR_DEG = 4.0  # max camera rotation error after similarity alignment
MAX_CENTER_ERROR = 0.05  # max camera-centre error after similarity alignment / mean camera distance


def _render_ring(folder: Path) -> dict[str, torch.Tensor]:
    """Render VIEWS photos of a bumpy ellipsoid with random vertex colours (blobs a few pixels wide: distinct,
    non-repeating SIFT features) with the exact ray caster; returns the true ``T_cam_world`` per file stem."""
    import trimesh

    from recon.core.transforms import look_at
    from recon.datasets.synthetic.raycast import Caster, bounding_sphere, camera_distance, intrinsics
    from recon.datasets.synthetic.shapes import Part

    rng = np.random.default_rng(1)
    sphere = trimesh.creation.icosphere(subdivisions=4)
    u = np.asarray(sphere.vertices)
    bump = np.sin(u @ rng.normal(size=(3, 4)) * 2.0).mean(1, keepdims=True)
    vertices = u * np.array([1.0, 0.8, 0.65]) * (1 + 0.08 * bump)
    part = Part(vertices, np.asarray(sphere.faces), vertex_colors=rng.uniform(0, 1, (len(u), 3)))
    center, radius = bounding_sphere([part])
    distance, up = camera_distance(radius), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    poses = {}
    for i in range(VIEWS):
        azimuth, elevation = 2 * math.pi * i / VIEWS, math.radians(20.0)
        direction = np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                              math.sin(elevation)])  # fmt: skip
        eye = torch.from_numpy(center + distance * direction)
        poses[f"view_{i:02d}"] = look_at(eye, torch.from_numpy(center), up)
    renders = Caster([part]).render(
        torch.stack(list(poses.values())).numpy(), intrinsics(RESOLUTION), RESOLUTION
    )
    folder.mkdir(parents=True)
    for name, rgba in zip(poses, renders.rgba):
        Image.fromarray(rgba, mode="RGBA").save(folder / f"{name}.png")  # composited over white on input
    return poses


def umeyama(src: torch.Tensor, dst: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Similarity ``dst ~ s R src + t`` minimising squared error (Umeyama 1991); returns (s, R, t)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    U, S, Vh = torch.linalg.svd(xd.T @ xs / len(src))
    D = torch.eye(3, dtype=src.dtype)
    D[2, 2] = float(torch.sign(torch.linalg.det(U @ Vh)))
    R = U @ D @ Vh
    s = float((S * torch.diagonal(D)).sum() / xs.pow(2).sum(1).mean())
    return s, R, mu_d - s * R @ mu_s


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """SfM on the rendered ring given as a (lossless) video: frame picking, SIFT, matching, mapping, undistortion."""
    import imageio_ffmpeg

    root = tmp_path_factory.mktemp("process")
    truth = _render_ring(root / "photos")
    size = (RESOLUTION, RESOLUTION)
    writer = imageio_ffmpeg.write_frames(str(root / "ring.mkv"), size, codec="ffv1", macro_block_size=1)
    writer.send(None)
    for name in truth:  # over white, as the photos path would composite them
        rgba = np.asarray(Image.open(root / "photos" / f"{name}.png"), dtype=np.float64) / 255.0
        rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
        writer.send(np.ascontiguousarray((rgb * 255.0).round().astype(np.uint8)))
    writer.close()
    report = process_capture(root / "ring.mkv", root / "out", ProcessOptions(threads=2, num_frames=VIEWS))
    assert report.video_frames == list(range(VIEWS))  # one frame per window: every frame, in order
    truth = {f"frame_{i:05d}": T for i, T in enumerate(truth.values())}  # the names the frames get
    return truth, root / "out", report


def test_sfm_recovers_the_known_cameras(processed):
    truth, out, report = processed
    assert report.images_total == VIEWS and report.images_registered >= VIEWS - 2  # all or nearly all
    assert report.points3d > 200 and report.mean_reprojection_error_px < 1.0
    assert (
        json.loads((out / "process_report.json").read_text())["images_registered"] == report.images_registered
    )
    assert not any(p.name.startswith(".out.partial") for p in out.parent.iterdir())
    ds = load_dataset(out)  # the written folder is a COLMAP dataset the loader reads directly
    assert ds.format == "colmap" and ds.points3d is not None
    frames = [f for fs in ds.splits.values() for f in fs]
    assert all(f.camera_model == "pinhole" for f in frames)
    for n in (2, 4, 8):
        assert (out / f"images_{n}" / frames[0].image_path.name).is_file()
    est = torch.stack([invert_T(f.T_cam_world) for f in frames])  # T_world_cam, SfM frame
    ref = torch.stack([invert_T(truth[Path(f.name).stem]) for f in frames])
    s, R, t = umeyama(est[:, :3, 3], ref[:, :3, 3])
    centers = s * est[:, :3, 3] @ R.T + t
    distance = float((ref[:, :3, 3] - ref[:, :3, 3].mean(0)).norm(dim=-1).mean())
    center_error = float((centers - ref[:, :3, 3]).norm(dim=-1).max()) / distance
    R_rel = ref[:, :3, :3].transpose(1, 2) @ (R @ est[:, :3, :3])
    cos = ((torch.diagonal(R_rel, dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    rotation_error = float(torch.rad2deg(torch.arccos(cos)).max())
    print(
        f"SfM: max rotation error {rotation_error:.3f} deg, max centre error {center_error:.2e} of the distance"
    )
    assert rotation_error < MAX_ROTATION_ERROR_DEG
    assert center_error < MAX_CENTER_ERROR


@pytest.mark.parametrize(
    "options",
    [
        ProcessOptions(threads=2, matching="exhaustive"),
        ProcessOptions(
            threads=2, matching="sequential", camera_model="PINHOLE", camera_params=(90, 90, 64, 48)
        ),
    ],
    ids=["exhaustive", "sequential-known-intrinsics"],
)
def test_too_few_registered_images_leave_no_output(tmp_path, options):
    photos = tmp_path / "noise"
    rng = np.random.default_rng(0)
    for i in range(4):  # independent noise images: nothing matches, nothing registers
        photos.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    with pytest.raises(
        DatasetError, match=r"structure from motion registered (no images|only \d of 4 images)"
    ):
        process_capture(photos, tmp_path / "out", options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise"]  # no output, no partial folder


def test_registration_thresholds_say_which_rule_failed():
    _check_registered(3, 6, Path("photos"))  # 3 images and 50%: accepted
    with pytest.raises(
        DatasetError, match=r"registered only 2 of 3 images of photos: expected at least 3 \("
    ):
        _check_registered(2, 3, Path("photos"))
    with pytest.raises(
        DatasetError, match=r"registered only 4 of 10 images of photos: expected at least 50% of"
    ):
        _check_registered(4, 10, Path("photos"))


def test_bad_arguments_name_them(tmp_path):
    with pytest.raises(DatasetError, match=r"source not found: .*nothing"):
        process_capture(tmp_path / "nothing", tmp_path / "out")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"notes.txt is not a video"):
        process_capture(tmp_path / "notes.txt", tmp_path / "out")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    with pytest.raises(DatasetError, match=r"output .*out already exists and is not an empty folder"):
        process_capture(tmp_path, tmp_path / "out")
    with pytest.raises(DatasetError, match=r"holds 0 images: expected at least 3"):
        process_capture(tmp_path / "out", tmp_path / "new")
    with pytest.raises(DatasetError, match=r"camera_params has 3 values: expected 4 for PINHOLE"):
        process_capture(
            tmp_path, tmp_path / "new", ProcessOptions(camera_model="PINHOLE", camera_params=(1, 2, 3))
        )


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    exif.get_ifd(0x8769)[0xA405] = 28  # Exif IFD: 35 mm focal length, a prior SfM uses; it must survive
    (tmp_path / "in").mkdir()
    Image.fromarray(arr).save(tmp_path / "in" / "a.jpg", exif=exif, quality=95)
    Image.fromarray(arr).save(tmp_path / "in" / "b.jpg", quality=95)
    a, b = ingest_images(sorted((tmp_path / "in").iterdir()), tmp_path / "out")
    upright = np.asarray(Image.open(a))
    assert upright.shape == (40, 20, 3)  # turned upright: portrait
    assert upright[:20].mean() > 200 and upright[20:].mean() < 50  # the white half is now on top
    kept = Image.open(a).getexif()
    assert (
        kept.get_ifd(0x8769).get(0xA405) == 28 and kept.get(0x0112, 1) == 1
    )  # focal prior kept, orientation now applied
    assert np.asarray(Image.open(b)).shape == (20, 40, 3)  # no EXIF orientation: unchanged


def test_video_frames_are_the_sharpest_of_each_window(tmp_path):
    import imageio_ffmpeg
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, (64, 64, 3)).astype(np.float64)
    count, windows = 20, 5
    sharp_index = [1, 6, 10, 15, 19]  # one sharp frame per window of 4; the rest are blurred
    writer = imageio_ffmpeg.write_frames(str(tmp_path / "v.mkv"), (64, 64), codec="ffv1", macro_block_size=1)
    writer.send(None)
    for i in range(count):
        frame = sharp if i in sharp_index else gaussian_filter(sharp, sigma=(1.5, 1.5, 0))
        writer.send(np.ascontiguousarray(np.roll(frame, i, axis=1).clip(0, 255).astype(np.uint8)))
    writer.close()
    chosen = extract_video_frames(tmp_path / "v.mkv", tmp_path / "frames", windows)
    assert chosen == sharp_index
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [f"frame_{i:05d}.jpg" for i in range(5)]
    blurred = gaussian_filter(sharp, sigma=(1.5, 1.5, 0))
    assert laplacian_variance(sharp) > 4 * laplacian_variance(blurred)
    with pytest.raises(DatasetError, match=r"has 20 frames: expected at least num_frames = 30"):
        extract_video_frames(tmp_path / "v.mkv", tmp_path / "more", 30)


def test_laplacian_variance_hand_computed():
    # a single bright pixel of value 1 in a 5x5 zero image (grey = 0.299 + 0.587 + 0.114 = 1): the Laplacian at
    # the 3x3 interior is -4 at the centre and +1 at its 4 neighbours, 0 at the 4 corners: mean 0, var 20/9
    img = np.zeros((5, 5, 3), np.float32)
    img[2, 2] = 1.0
    assert laplacian_variance(img) == pytest.approx(20 / 9, rel=1e-5)
    assert math.isclose(laplacian_variance(np.ones((5, 5, 3))), 0.0, abs_tol=1e-9)


def test_per_camera_undistorted_sizes_are_cropped_to_one(tmp_path, dw):
    """With one camera per image, undistortion sizes images differently; the dataset is centre-cropped to the
    smallest size with each principal point and keypoint shifted by its crop offset."""
    import pycolmap

    from recon.datasets.process.sfm import _crop_to_common_size

    _, T = dw.random_cameras(3, width=40, height=30, seed=1)
    cams = [("PINHOLE", 40, 30, [30.0, 31.0, 20.5, 15.5]), ("PINHOLE", 36, 28, [30.0, 31.0, 18.0, 14.0])]
    dw.colmap(tmp_path, cams, T, [0, 1, 0], binary=True, points=np.zeros((1, 3)))
    before = np.asarray(Image.open(tmp_path / "images" / "img_000.png"))
    _crop_to_common_size(pycolmap, tmp_path)
    # camera 1 is 40x30 -> 36x28: offsets (2, 1); pixel (x, y) of the crop is pixel (x + 2, y + 1) before
    assert np.array_equal(np.asarray(Image.open(tmp_path / "images" / "img_000.png")), before[1:29, 2:38])
    model = pycolmap.Reconstruction(str(tmp_path / "sparse" / "0"))
    assert {c.camera_id: list(c.params) for c in model.cameras.values()} == {
        1: [30.0, 31.0, 18.5, 14.5],
        2: [30.0, 31.0, 18.0, 14.0],
    }
    first = next(im for im in model.images.values() if im.name == "img_000.png")
    assert np.allclose(first.points2D[0].xy, [1.5 - 2, 2.5 - 1])  # written at (1.5, 2.5) by the fixture
    ds = load_dataset(tmp_path)
    assert {(f.width, f.height) for fs in ds.splits.values() for f in fs} == {(36, 28)}
