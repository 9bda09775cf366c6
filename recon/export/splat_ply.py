"""The triangle-splat PLY: a triangle soup any mesh tool opens, carrying every splat attribute for reloading.

Layout (binary little endian)::

    element vertex 3N        float x, y, z                      (triangle i uses vertices 3i, 3i+1, 3i+2)
    element face N           list uchar int vertex_indices
                             uchar red, green, blue, alpha      (display colour: SH seen from the origin, opacity)
                             float logit_opacity, raw_sigma     (stored parameters, spec §1)
                             float f_dc_0..2                    (SH DC, channel c)
                             float f_rest_0..3K-1               (higher SH, CHANNEL-major as in 3DGS:
                                                                 f_rest_{c*K + k} = coefficient k+1 of channel c)

The header comment ``recon triangle splats sh_degree D f_rest channel_major`` marks this layout. Files written
before the 3DGS order (no ``f_rest channel_major`` in the comment) stored ``f_rest_{k*3 + c}``; the reader accepts
both. Vertices are not merged so the file round-trips the stored parameters exactly.
"""

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recon.core import ReconError
from recon.export.mesh_io import _rgba
from recon.export.splat_formats import TriangleSplats
from recon.scenes.triangles import TriangleSceneConfig, TriangleSplatScene

MAGIC_COMMENT = "recon triangle splats"
CHANNEL_MAJOR = "f_rest channel_major"


def _face_dtype(rest: int) -> np.dtype:
    fields = [("count", "u1"), ("vertex_indices", "<i4", (3,))]
    fields += [(c, "u1") for c in ("red", "green", "blue", "alpha")]
    fields += [("logit_opacity", "<f4"), ("raw_sigma", "<f4")]
    fields += [(f"f_dc_{i}", "<f4") for i in range(3)]
    fields += [(f"f_rest_{i}", "<f4") for i in range(3 * rest)]
    return np.dtype(fields)


def display_colors(splats: TriangleSplats) -> Tensor:
    """Face colours seen by a viewer at the origin (direction ``normalize(centroid)``, spec §13.1), in [0, 1]."""
    from recon.renderers.splat.sh import eval_sh

    sh = torch.cat([splats.sh_dc, splats.sh_rest], dim=1)
    return eval_sh(splats.sh_degree, sh, splats.vertices.mean(dim=1)).clamp(0.0, 1.0)


def write_splat_ply(scene: TriangleSplatScene | TriangleSplats, path: str | Path) -> Path:
    """Write every triangle (no opacity filter) with its attributes; returns the path."""
    splats = scene if isinstance(scene, TriangleSplats) else TriangleSplats.from_scene(scene, fmt="splat-ply")
    path = Path(path)
    n, rest = len(splats), splats.sh_rest.shape[1]
    faces = np.zeros(n, dtype=_face_dtype(rest))
    faces["count"] = 3
    faces["vertex_indices"] = np.arange(3 * n, dtype=np.int32).reshape(n, 3)
    rgba = _rgba(display_colors(splats), torch.sigmoid(splats.logit_opacities))
    for k, c in enumerate(("red", "green", "blue", "alpha")):
        faces[c] = rgba[:, k]
    faces["logit_opacity"] = splats.logit_opacities.numpy()
    faces["raw_sigma"] = splats.raw_sigmas.numpy()
    dc = splats.sh_dc.reshape(n, 3).numpy()
    for i in range(3):
        faces[f"f_dc_{i}"] = dc[:, i]
    sh_rest = splats.sh_rest.transpose(1, 2).reshape(n, 3 * rest).numpy()  # channel-major (3DGS order)
    for i in range(3 * rest):
        faces[f"f_rest_{i}"] = sh_rest[:, i]
    header = [
        "ply",
        "format binary_little_endian 1.0",
        f"comment {MAGIC_COMMENT} sh_degree {splats.sh_degree} {CHANNEL_MAJOR}",
        f"element vertex {3 * n}",
        *[f"property float {c}" for c in "xyz"],
        f"element face {n}",
        "property list uchar int vertex_indices",
        *[f"property uchar {c}" for c in ("red", "green", "blue", "alpha")],
        "property float logit_opacity",
        "property float raw_sigma",
        *[f"property float f_dc_{i}" for i in range(3)],
        *[f"property float f_rest_{i}" for i in range(3 * rest)],
        "end_header",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(splats.vertices.reshape(-1, 3).numpy().astype("<f4").tobytes())
        f.write(faces.tobytes())
    return path


def read_splat_ply(path: str | Path) -> dict[str, Tensor]:
    """The stored parameters of a triangle-splat PLY: vertices (N,3,3), sh_dc (N,1,3), sh_rest (N,K,3),
    logit_opacities (N,), raw_sigmas (N,), and ``sh_degree`` (0-d). Reads both f_rest orders (module docstring).

    Raises:
        ReconError: the file is not a triangle-splat PLY written by ``write_splat_ply``.
    """
    path = Path(path)
    data = path.read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ReconError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii").splitlines()
    magic = next((line for line in header if MAGIC_COMMENT in line), None)
    if magic is None:
        raise ReconError(
            f"{path}: not a triangle-splat PLY (no '{MAGIC_COMMENT}' comment); export with --format splat-ply"
        )
    words = magic.split()
    degree = int(words[words.index("sh_degree") + 1])
    n_vert = int(next(line for line in header if line.startswith("element vertex")).split()[-1])
    n_face = int(next(line for line in header if line.startswith("element face")).split()[-1])
    rest = sum(1 for line in header if line.startswith("property float f_rest_")) // 3
    body = data[end + len(b"end_header\n") :]
    verts = np.frombuffer(body, dtype="<f4", count=3 * n_vert)
    faces = np.frombuffer(body, dtype=_face_dtype(rest), count=n_face, offset=verts.nbytes)
    vertices = torch.from_numpy(verts.copy()).reshape(n_vert, 3)[
        torch.from_numpy(faces["vertex_indices"].astype(np.int64))
    ]
    dc = np.stack([faces[f"f_dc_{i}"] for i in range(3)], axis=1)
    flat = (
        np.stack([faces[f"f_rest_{i}"] for i in range(3 * rest)], axis=1) if rest else np.zeros((n_face, 0))
    )
    flat = torch.from_numpy(flat.astype(np.float32))
    if CHANNEL_MAJOR in magic:
        sh_rest = flat.reshape(n_face, 3, rest).transpose(1, 2).contiguous()
    else:  # files from before the 3DGS order: coefficient-major
        sh_rest = flat.reshape(n_face, rest, 3)
    return {
        "vertices": vertices,
        "sh_dc": torch.from_numpy(dc.astype(np.float32)).reshape(n_face, 1, 3),
        "sh_rest": sh_rest,
        "logit_opacities": torch.from_numpy(faces["logit_opacity"].copy()),
        "raw_sigmas": torch.from_numpy(faces["raw_sigma"].copy()),
        "sh_degree": torch.tensor(degree),
    }


def scene_from_splat_ply(path: str | Path, config: TriangleSceneConfig | None = None) -> TriangleSplatScene:
    """A TriangleSplatScene with the parameters stored in a triangle-splat PLY (all SH degrees active)."""
    params = read_splat_ply(path)
    degree = int(params.pop("sh_degree"))
    scene = TriangleSplatScene.empty(config or TriangleSceneConfig(sh_degree=degree))
    params["active_sh_degree"] = torch.tensor(degree)
    scene.load_state_dict_resizing(params)
    return scene
