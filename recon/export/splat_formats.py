"""Triangle splats in files other tools open: the official Triangle Splatting parameters, the Inria 3DGS PLY,
coloured point clouds and the dataset cameras as JSON.

SH layouts: recon stores ``sh_rest`` as (N, K, 3) (coefficient k, channel c), like the official Triangle Splatting
``features_rest`` and 3DGS ``_features_rest``. The 3DGS PLY flattens it CHANNEL-major: ``f_rest_{c * K + k}`` is
coefficient ``k + 1`` of channel ``c`` (all coefficients of R, then G, then B), i.e.
``features_rest.transpose(1, 2).flatten(1)`` in the 3DGS ``save_ply``.
"""

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from recon.core import Camera, Mesh, ReconError
from recon.core.transforms import rotmat_to_quat, similarity_scale, transform_pose
from recon.export.mesh_io import _to_u8, vertex_normals

THREEDGS_SH_DEGREE = (
    3  # the Inria layout always has 45 f_rest values (degree 3); lower degrees are zero-padded
)
THIN_SCALE_RATIO = 1e-3  # normal-axis std of a flattened triangle, relative to its larger in-plane std
MIN_SCALE = 1e-9  # floor of every std before the log (degenerate triangles)
ROTATION_TOL = 1e-6  # |R - I| below which a similarity counts as rotation-free (SH stay valid)


@dataclass(frozen=True)
class TriangleSplats:
    """The stored parameters of a triangle-splat scene (spec §1), detached on the CPU.

    Attributes:
        vertices: (N, 3, 3) world positions.
        sh_dc: (N, 1, 3) SH DC coefficients.
        sh_rest: (N, K, 3) higher SH coefficients (coefficient-major, channel last).
        logit_opacities: (N,) ``o = sigmoid(logit)``.
        raw_sigmas: (N,) ``sigma = 0.01 + exp(raw)``.
        sh_degree: SH degree of ``sh_rest`` (``K = (degree + 1)^2 - 1``).
    """

    vertices: Float[Tensor, "N 3 3"]
    sh_dc: Float[Tensor, "N 1 3"]
    sh_rest: Float[Tensor, "N K 3"]
    logit_opacities: Float[Tensor, " N"]
    raw_sigmas: Float[Tensor, " N"]
    sh_degree: int

    @classmethod
    def from_scene(cls, scene, *, fmt: str) -> "TriangleSplats":
        """The parameters of a ``TriangleSplatScene``; ``ReconError`` naming ``--format fmt`` for other scenes."""
        from recon.scenes.triangles import TriangleSplatScene

        if not isinstance(scene, TriangleSplatScene):
            raise ReconError(
                f"--format {fmt}: needs a triangle-splat run (this scene is {type(scene).__name__})"
            )
        return cls(*(getattr(scene, name).detach().float().cpu().clone() for name in
                     ("vertices", "sh_dc", "sh_rest", "logit_opacities", "raw_sigmas")),
                   sh_degree=int(scene.config.sh_degree))  # fmt: skip

    def __len__(self) -> int:
        return self.vertices.shape[0]

    def select(self, keep: Tensor) -> "TriangleSplats":
        return replace(self, vertices=self.vertices[keep], sh_dc=self.sh_dc[keep], sh_rest=self.sh_rest[keep],
                       logit_opacities=self.logit_opacities[keep], raw_sigmas=self.raw_sigmas[keep])  # fmt: skip

    def transformed(self, S: Float[Tensor, "4 4"], *, fmt: str) -> "TriangleSplats":
        """The splats under the similarity ``S``. View-dependent SH would need rotating, so ``S`` may only
        translate and scale when any SH coefficient above degree 0 is non-zero (ReconError otherwise)."""
        S = S.double()
        R = S[:3, :3] / similarity_scale(S)
        if float((R - torch.eye(3, dtype=S.dtype)).abs().max()) > ROTATION_TOL and bool(self.sh_rest.any()):
            raise ReconError(
                f"--format {fmt}: the dataset frame rotates the scene and the splats have view-dependent "
                "colour (SH degree > 0); rotating SH is not supported: pass --frame normalized"
            )
        flat = self.vertices.double().reshape(-1, 3) @ S[:3, :3].T + S[:3, 3]
        return replace(self, vertices=flat.reshape(-1, 3, 3).float())


def flat_gaussians(
    vertices: Float[Tensor, "N 3 3"],
) -> tuple[Float[Tensor, "N 3"], Float[Tensor, "N 3"], Float[Tensor, "N 3 3"]]:
    """Each triangle as a flat Gaussian with the triangle's own second moments (moment matching).

    The covariance of the uniform distribution over a triangle with centroid ``m`` is
    ``Σ = (1/12) Σ_i (v_i − m)(v_i − m)^T``; its two in-plane eigenvectors and the unit normal (right-hand
    rule) are the columns of the rotation, the in-plane stds are ``sqrt`` of the eigenvalues and the normal std
    is ``THIN_SCALE_RATIO`` times the larger one.

    Returns:
        ``(centres, stds, R)``: centroids (N, 3), stds (N, 3) along the columns of the proper rotations
        R (N, 3, 3), whose third column is the triangle normal.
    """
    v = vertices.double()
    m = v.mean(dim=1)
    d = v - m[:, None]
    n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    e0 = d[:, 0] - (d[:, 0] * n).sum(-1, keepdim=True) * n
    e0 = e0 / e0.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    e1 = torch.linalg.cross(n, e0)
    basis = torch.stack([e0, e1], dim=-1)  # (N, 3, 2) in-plane orthonormal basis
    p = d @ basis  # (N, 3, 2) vertex offsets in the plane
    cov = p.transpose(1, 2) @ p / 12.0
    lam, vec = torch.linalg.eigh(cov)  # ascending
    lam, vec = lam.flip(-1), vec.flip(-1)
    a = basis @ vec  # (N, 3, 2) principal in-plane axes
    a1 = torch.where(((torch.linalg.cross(a[..., 0], a[..., 1]) * n).sum(-1, keepdim=True) < 0), -a[..., 1],
                     a[..., 1])  # fmt: skip
    R = torch.stack([a[..., 0], a1, n], dim=-1)
    std = lam.clamp_min(0).sqrt().clamp_min(MIN_SCALE)
    stds = torch.cat([std, (THIN_SCALE_RATIO * std[:, :1]).clamp_min(MIN_SCALE)], dim=-1)
    return m.float(), stds.float(), R.float()


def _write_vertex_ply(path: Path, columns: dict[str, np.ndarray], comments: list[str]) -> Path:
    dtype = np.dtype([(name, col.dtype.str) for name, col in columns.items()])
    rows = np.zeros(len(next(iter(columns.values()))), dtype=dtype)
    for name, col in columns.items():
        rows[name] = col
    kind = {"<f4": "float", "|u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", *[f"comment {c}" for c in comments],
              f"element vertex {len(rows)}", *[f"property {kind[col.dtype.str]} {name}" for name, col in columns.items()],
              "end_header"]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(rows.tobytes())
    return path


def write_3dgs_ply(splats: TriangleSplats, path: str | Path) -> Path:
    """Each triangle as a flat Gaussian in the Inria 3DGS PLY layout (``x y z nx ny nz f_dc_0..2
    f_rest_0..44 opacity scale_0..2 rot_0..3``: logit opacity, log stds, unit quaternion wxyz, f_rest
    channel-major and zero-padded to degree 3). Normals hold the triangle normal (3DGS writes zeros)."""
    centres, stds, R = flat_gaussians(splats.vertices)
    n = len(splats)
    k_full = (THREEDGS_SH_DEGREE + 1) ** 2 - 1
    rest = torch.zeros(n, k_full, 3)
    rest[:, : splats.sh_rest.shape[1]] = splats.sh_rest[:, :k_full]
    rest_cm = rest.transpose(1, 2).reshape(n, 3 * k_full)  # channel-major, as 3DGS save_ply
    quat = rotmat_to_quat(R.double()).float()
    cols: dict[str, Tensor] = {"x": centres[:, 0], "y": centres[:, 1], "z": centres[:, 2]}
    cols |= {"nx": R[:, 0, 2], "ny": R[:, 1, 2], "nz": R[:, 2, 2]}
    cols |= {f"f_dc_{i}": splats.sh_dc[:, 0, i] for i in range(3)}
    cols |= {f"f_rest_{i}": rest_cm[:, i] for i in range(3 * k_full)}
    cols["opacity"] = splats.logit_opacities
    cols |= {f"scale_{i}": stds[:, i].log() for i in range(3)}
    cols |= {f"rot_{i}": quat[:, i] for i in range(4)}
    arrays = {k: v.detach().float().cpu().numpy().astype("<f4") for k, v in cols.items()}
    return _write_vertex_ply(
        Path(path), arrays, ["recon triangle splats as flat 3D Gaussians (Inria 3DGS layout)"]
    )


def ts_state_dict(splats: TriangleSplats) -> dict[str, Tensor]:
    """The official Triangle Splatting ``point_cloud_state_dict`` tensors (``scene/triangle_model.py``
    ``TriangleModel.save``): triangles_points (N, 3, 3), sigma (N, 1) raw (``0.01 + exp``), features_dc (N, 1, 3),
    features_rest (N, K, 3), opacity (N, 1) logit, active_sh_degree (0-d int64)."""
    return {
        "triangles_points": splats.vertices.contiguous(),
        "sigma": splats.raw_sigmas[:, None].contiguous(),
        "features_dc": splats.sh_dc.contiguous(),
        "features_rest": splats.sh_rest.contiguous(),
        "opacity": splats.logit_opacities[:, None].contiguous(),
        "active_sh_degree": torch.tensor(splats.sh_degree, dtype=torch.int64),
    }


def write_ts_ckpt(splats: TriangleSplats, path: str | Path) -> Path:
    """``ts_state_dict`` as safetensors (metadata names the layout); see docs/export.md to make the official
    ``point_cloud_state_dict.pt`` from it."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"layout": "trianglesplatting/triangle-splatting point_cloud_state_dict", "writer": "recon export"}
    save_file(ts_state_dict(splats), str(path), metadata=meta)
    return path


def mesh_points(mesh: Mesh) -> tuple[Float[Tensor, "P 3"], Float[Tensor, "P 3"], Float[Tensor, "P 3"] | None]:
    """Points of a mesh for a point cloud: face centroids with face normals and colours for a face-coloured
    soup (one point per primitive), else the vertices with their normals and colours."""
    if mesh.face_colors is not None and mesh.vertex_colors is None:
        return mesh.vertices[mesh.faces].mean(dim=1), mesh.face_normals(), mesh.face_colors
    return mesh.vertices, vertex_normals(mesh), mesh.vertex_colors


def write_points_ply(mesh: Mesh, path: str | Path) -> Path:
    """A point cloud PLY (``x y z nx ny nz red green blue``, sRGB 8 bit) of ``mesh_points(mesh)``."""
    xyz, normals, colors = mesh_points(mesh)
    cols = {k: xyz[:, i] for i, k in enumerate("xyz")} | {f"n{k}": normals[:, i] for i, k in enumerate("xyz")}
    arrays = {k: v.detach().float().cpu().numpy().astype("<f4") for k, v in cols.items()}
    if colors is not None:
        rgb = _to_u8(colors)
        arrays |= {c: rgb[:, i] for i, c in enumerate(("red", "green", "blue"))}
    return _write_vertex_ply(Path(path), arrays, ["recon export points: colours sRGB"])


@dataclass(frozen=True)
class CameraRecord:
    """One dataset camera as exported: name, split, pinhole K (pixels, at ``width`` x ``height``), and
    ``T_cam_world`` (OpenCV axes) in the dataset's ORIGINAL world frame."""

    name: str
    split: str
    width: int
    height: int
    K: Float[Tensor, "3 3"]
    T_cam_world: Float[Tensor, "4 4"]


def cameras_json(records: list[CameraRecord], S: Float[Tensor, "4 4"] | None, frame: str) -> dict:
    """The ``--format cameras`` document; ``S`` (original -> normalised) re-expresses poses when ``frame`` is
    ``normalized`` (the camera frame then has normalised units)."""
    out = []
    for r in records:
        T = r.T_cam_world.double()
        if frame == "normalized" and S is not None:
            T = transform_pose(T, S.double())
        out.append({"name": r.name, "split": r.split, "width": r.width, "height": r.height,
                    "K": r.K.double().tolist(), "T_cam_world": T.tolist()})  # fmt: skip
    return {
        "frame": frame,
        "axes": "OpenCV (x right, y down, z forward); pixel centres at +0.5",
        "cameras": out,
    }


def write_cameras_json(records: list[CameraRecord], S: Tensor | None, frame: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cameras_json(records, S, frame), indent=1) + "\n")
    return path


def stacked_cameras(records: list[CameraRecord], S: Tensor, split: str = "train") -> Camera:
    """The cameras of ``split`` in the NORMALISED frame (for rendering), stacked; ReconError if sizes differ."""
    chosen = [r for r in records if r.split == split]
    if not chosen:
        raise ReconError(f"the dataset has no {split!r} cameras to render from")
    if len({(r.width, r.height) for r in chosen}) > 1:
        chosen = [r for r in chosen if (r.width, r.height) == (chosen[0].width, chosen[0].height)]
    T = torch.stack([transform_pose(r.T_cam_world.double(), S.double()) for r in chosen]).float()
    K = torch.stack([r.K for r in chosen]).float()
    return Camera(T_cam_world=T, K=K, width=chosen[0].width, height=chosen[0].height)
