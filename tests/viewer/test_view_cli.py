"""``recon view``: mesh files, argument errors, and the announcement (run directories: test_view_run.py)."""

import socket
import threading
import time

import numpy as np
import pytest
import torch
import trimesh

from recon.cli import view as view_cli
from recon.core import ReconError


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_mesh(path, *, colors: str):
    box = trimesh.creation.box()
    if colors == "vertex":
        box.visual.vertex_colors = np.tile([255, 0, 0, 255], (len(box.vertices), 1)).astype(np.uint8)
    elif colors == "face":
        box.visual.face_colors = np.tile([0, 255, 0, 255], (len(box.faces), 1)).astype(np.uint8)
    box.export(path)
    return box


@pytest.mark.parametrize(
    ("suffix", "colors"), [(".ply", "vertex"), (".obj", "none"), (".glb", "vertex"), (".ply", "face")]
)
def test_load_mesh_file(tmp_path, suffix, colors):
    box = _write_mesh(tmp_path / f"box{suffix}", colors=colors)
    mesh = view_cli.load_mesh_file(tmp_path / f"box{suffix}")
    assert mesh.num_faces == len(box.faces) == 12
    assert torch.allclose(mesh.bounds(), torch.tensor([[-0.5] * 3, [0.5] * 3]), atol=1e-6)
    if colors == "vertex":
        assert mesh.vertex_colors is not None and torch.allclose(
            mesh.vertex_colors[0], torch.tensor([1.0, 0.0, 0.0])
        )
    if colors == "face":
        colored = mesh.face_colors if mesh.face_colors is not None else mesh.vertex_colors
        assert colored is not None and torch.allclose(colored[0], torch.tensor([0.0, 1.0, 0.0]))


def test_unreadable_mesh(tmp_path):
    bad = tmp_path / "broken.ply"
    bad.write_text("this is not a ply file")
    with pytest.raises(ReconError, match="broken.ply"):
        view_cli.load_mesh_file(bad)


def test_bad_paths(tmp_path):
    with pytest.raises(ReconError, match="no such run directory or mesh file"):
        view_cli.main([str(tmp_path / "missing")])
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(ReconError, match="expected a run directory or a mesh file"):
        view_cli.main([str(other)])
    with pytest.raises(ReconError, match="not a run directory"):
        view_cli.main([str(tmp_path)])


def test_serves_a_mesh_file(tmp_path, capsys):
    _write_mesh(tmp_path / "box.ply", colors="vertex")
    port = _free_port()
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(
            code=view_cli.main([str(tmp_path / "box.ply"), "--port", str(port), "--seconds", "2"])
        )
    )
    thread.start()
    deadline = time.monotonic() + 10
    connected = False
    while time.monotonic() < deadline and not connected:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                connected = True
        except OSError:
            time.sleep(0.1)
    thread.join(timeout=15)
    assert connected and result.get("code") == 0
    err = capsys.readouterr().err
    assert f"http://127.0.0.1:{port}" in err and f"ssh -L {port}:127.0.0.1:{port}" in err


# --- server-side mesh renders (the hard rasterizer of recon eval --mesh) -------------------------------------------
def _front_camera(size: int = 24):
    """A camera on the -z axis at distance 3 looking at the origin (identity rotation, OpenCV axes)."""
    from recon.core import Camera

    T = torch.eye(4)
    T[2, 3] = 3.0
    K = torch.tensor([[[size * 1.2, 0.0, size / 2], [0.0, size * 1.2, size / 2], [0.0, 0.0, 1.0]]])
    return Camera(T[None], K, size, size)


def test_mesh_file_renders_server_side_in_every_mode(tmp_path):
    from recon.viewer import ViewState

    _write_mesh(tmp_path / "box.ply", colors="vertex")
    mesh, texture = view_cli.load_textured_mesh_file(tmp_path / "box.ply")
    assert texture is None
    render = view_cli.mesh_render_fn(mesh, device="cpu", backend="torch")
    camera = _front_camera()
    rgb = render(camera, ViewState(mode="rgb", background=(0.0, 0.0, 1.0)))
    centre, corner = rgb.rgb[0, 12, 12], rgb.rgb[0, 0, 0]
    assert torch.allclose(centre, torch.tensor([1.0, 0.0, 0.0]), atol=1e-5)  # the red box face at z = -0.5
    assert torch.allclose(corner, torch.tensor([0.0, 0.0, 1.0]), atol=1e-5)  # the background
    assert (
        rgb.depth is not None and abs(float(rgb.depth[0, 12, 12, 0]) - 2.5) < 1e-4 and rgb.depth[0, 0, 0] == 0
    )
    normals = render(camera, ViewState(mode="normals")).normals
    assert normals is not None and torch.allclose(
        normals[0, 12, 12], torch.tensor([0.0, 0.0, -1.0]), atol=1e-5
    )
    alpha = render(camera, ViewState(mode="alpha")).alpha
    assert alpha[0, 12, 12, 0] == 1 and alpha[0, 0, 0, 0] == 0


@pytest.mark.parametrize("suffix", [".glb", ".obj"])
def test_textured_export_renders_like_the_in_memory_mesh(tmp_path, suffix):
    from recon.core import Mesh
    from recon.export.mesh_io import Texture, write_mesh
    from recon.scenes.base import RenderOptions
    from recon.scenes.mesh_scene import MeshRenderer, MeshTexture
    from recon.viewer import ViewState

    quad = Mesh(
        vertices=torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]]),
        faces=torch.tensor([[0, 1, 2], [0, 2, 3]]),
    )
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    image = (
        torch.tensor([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 51]]], dtype=torch.float32) / 255
    )
    write_mesh(quad, tmp_path / f"quad{suffix}", texture=Texture(uv=uv, image=image))
    mesh, texture = view_cli.load_textured_mesh_file(tmp_path / f"quad{suffix}")
    assert texture is not None and texture.image.shape == (2, 2, 3)
    camera = _front_camera(16)
    served = view_cli.mesh_render_fn(mesh, texture=texture, backend="torch")(
        camera, ViewState(background=(1, 1, 1))
    )
    expected = MeshRenderer(quad, texture=MeshTexture(uv=uv, image=image)).render(
        camera, RenderOptions(background=torch.ones(3), backend="torch")
    )
    assert torch.allclose(served.rgb, expected.rgb, atol=2e-3)
    assert float(served.rgb.std()) > 0.1  # the texture shows (four distinct texels, not a flat colour)
