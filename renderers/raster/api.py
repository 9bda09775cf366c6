"""Public API of the mesh rasterizer op ``rasterize`` (spec superquadrics.md section 6, sparseflex.md section 5).

Stages: :func:`~recon.renderers.raster.project.project_faces` (torch, shared: camera transform, near-plane
clipping, projection) -> visibility (which face in which of the K slots; discrete) -> attributes (barycentrics,
depth, signed distance of the chosen faces; differentiable). The torch reference (``ref.py``) runs both passes by
brute force; the Warp backend bins faces into 16x16 tiles and keeps a per-pixel top-K insertion list, then runs
an attribute kernel with a hand-written backward.
"""

import torch
from jaxtyping import Float, Int
from torch import Tensor

from recon.core.camera import Camera
from recon.core.shapes import Backend
from recon.renderers._backend import resolve_backend
from recon.renderers.raster import ref
from recon.renderers.raster.project import project_faces
from recon.renderers.raster.types import PAD_DIST, Fragments

__all__ = ["DEFAULT_Z_NEAR", "PAD_DIST", "rasterize"]

# Near plane (camera-frame z, scene units). The Differentiable Blocks World reference clips at 1e-3 (spec
# superquadrics.md section 6); for scenes normalised to about the unit box it cuts nothing visible, while clipped
# corners stay projectable in float32 (f / z_near ~ 1e6 px for f ~ 1000 px).
DEFAULT_Z_NEAR = 1e-3


def rasterize(
    vertices: Float[Tensor, "V 3"],
    faces: Int[Tensor, "F 3"],
    camera: Camera,
    *,
    layers: int = 1,
    blur_sq: float = 0.0,
    z_near: float = DEFAULT_Z_NEAR,
    detach_bary: bool = False,
    cull_backfaces: bool = False,
    face_to_mesh: Int[Tensor, " F"] | None = None,
    backend: Backend = "auto",
) -> Fragments:
    """Rasterize a triangle mesh into the K nearest faces per pixel for every camera.

    For pixel centre ``p = (x + 0.5, y + 0.5)`` with ray ``d = K^-1 (p, 1)`` and face ``f`` with camera-frame
    corners ``v0, v1, v2`` (``[a, b, c] = a . (b x c)``):

    .. math::
        b_i = \\frac{n_i}{n_0 + n_1 + n_2},\\ n_0 = [d, v_1, v_2],\\ n_1 = [d, v_2, v_0],\\ n_2 = [d, v_0, v_1],
        \\qquad z = \\frac{[v_0, v_1, v_2]}{n_0 + n_1 + n_2}

    (perspective-correct barycentrics and camera-z of the point where the ray meets the face's plane), and
    ``dists = -/+ min_edges |p - closest point|^2`` over the edges of the projected face (inside / outside).

    ``pix_to_face[c, y, x, k] = f`` means face ``f`` is the k-th nearest face (by ``z``) of camera ``c`` at pixel
    ``(y, x)``; -1 pads. A face covers a pixel when the centre lies inside its projection (inclusive: a centre
    exactly on an edge belongs to every face sharing that edge) or, with ``blur_sq > 0``, within ``blur_sq`` px^2
    of it. Faces at equal depth are ordered by face index. Both windings are rasterized (back faces too) unless
    ``cull_backfaces``; a front face has its normal ``(v1 - v0) x (v2 - v0)`` pointing towards the camera. Faces
    crossing the near plane are clipped there (the covered region and ``dists`` are those of the part in front;
    ``bary`` and ``depth`` stay those of the original face); faces fully behind, zero-area faces and faces seen
    exactly edge-on produce no fragments. Lens distortion of ``camera`` is ignored (pinhole projection; datasets
    undistort images at load).

    Args:
        vertices: (V, 3) world-space vertex positions (float32 for the Warp backend, float32/64 for torch).
        faces: (F, 3) integer vertex indices in ``[0, V)``.
        camera: C cameras (``recon.core.Camera``) on the device of ``vertices``.
        layers: K >= 1 face slots per pixel.
        blur_sq: squared blur radius in pixels^2 (>= 0); 0 for hard rasterisation. A soft-rasterisation sigma in
            PyTorch3D squared-NDC units converts as ``blur_sq = ln(1/1e-4 - 1) sigma (min(H, W) / 2)^2``.
        z_near: near plane in camera-frame z (> 0, scene units); see ``DEFAULT_Z_NEAR``.
        detach_bary: return ``bary`` detached (the Differentiable Blocks World recipe: geometry learns from
            coverage only, not through texture lookups).
        cull_backfaces: drop faces whose normal points away from the camera.
        face_to_mesh: (F,) int mesh index per face when several meshes share the call; carried into the output
            (it does not change visibility).
        backend: "torch" (reference), "warp" or "auto".

    Returns:
        Fragments with ``pix_to_face`` (C, H, W, K) int64, ``bary`` (C, H, W, K, 3), ``dists`` (C, H, W, K) and
        ``depth`` (C, H, W, K); empty slots hold 0, 0 and ``PAD_DIST``. Blurred fragments outside their face
        have a negative barycentric (see ``Fragments.clipped_bary``).

    Differentiable w.r.t. ``vertices`` (through ``bary``, ``depth`` and ``dists``) and ``camera.T_cam_world``; not
    w.r.t. the intrinsics ``camera.K``; ``pix_to_face`` is an integer output.

    Example:
        >>> import torch
        >>> from recon.core.camera import Camera
        >>> cam = Camera(torch.eye(4)[None], torch.tensor([[[4.0, 0, 2], [0, 4, 2], [0, 0, 1]]]), 4, 4)
        >>> v = torch.tensor([[-1.0, -1, 2], [1, -1, 2], [0, 1, 2]])
        >>> frags = rasterize(v, torch.tensor([[0, 1, 2]]), cam, backend="torch")
        >>> frags.pix_to_face[0, :, :, 0]
        tensor([[ 0,  0,  0,  0],
                [-1,  0,  0, -1],
                [-1,  0,  0, -1],
                [-1, -1, -1, -1]])
    """
    _validate(vertices, faces, camera, layers, blur_sq, z_near, face_to_mesh)
    faces = faces.to(device=vertices.device, dtype=torch.int64)
    camera = camera.to(dtype=vertices.dtype)
    choice = resolve_backend(backend, vertices, camera.T_cam_world, camera.K, op="raster.rasterize")
    proj = project_faces(vertices, faces, camera, z_near=z_near, cull_backfaces=cull_backfaces)
    if choice == "warp":
        from recon.renderers.raster import warp_impl

        pix_to_face, bary, depth, dists = warp_impl.rasterize_warp(
            proj, faces, layers=layers, blur_sq=blur_sq
        )
    else:
        pix_to_face = ref.visibility(proj, layers=layers, blur_sq=blur_sq)
        bary, depth, dists = ref.attributes(proj, faces, pix_to_face)
    if detach_bary:
        bary = bary.detach()
    return Fragments(pix_to_face, bary, dists, depth, face_to_mesh)


def _validate(
    vertices: Tensor,
    faces: Tensor,
    camera: Camera,
    layers: int,
    blur_sq: float,
    z_near: float,
    face_to_mesh: Tensor | None,
) -> None:
    if not isinstance(camera, Camera):
        raise TypeError(f"camera must be a recon.core.Camera, got {type(camera).__name__}")
    if not isinstance(vertices, Tensor) or not vertices.is_floating_point():
        raise TypeError(
            f"vertices must be a floating-point torch.Tensor of shape (V, 3), got {vertices!r:.80}"
        )
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {tuple(vertices.shape)}")
    if not isinstance(faces, Tensor) or faces.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"faces must be an int32/int64 torch.Tensor of shape (F, 3), got {faces!r:.80}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(faces.shape)}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[0]):
        raise ValueError(f"faces must index vertices in [0, {vertices.shape[0]}), got [{int(faces.min())}, "
                         f"{int(faces.max())}]")  # fmt: skip
    if faces.device != vertices.device or camera.device != vertices.device:
        raise ValueError(f"faces and camera must be on the device of vertices ({vertices.device}), got "
                         f"{faces.device} and {camera.device}")  # fmt: skip
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ValueError(f"layers must be an int >= 1, got {layers!r}")
    if not float(blur_sq) >= 0.0 or not torch.isfinite(torch.tensor(float(blur_sq))):
        raise ValueError(f"blur_sq must be a finite float >= 0 (px^2), got {blur_sq!r}")
    if not float(z_near) > 0.0:
        raise ValueError(f"z_near must be > 0, got {z_near!r}")
    if face_to_mesh is not None:
        if not isinstance(face_to_mesh, Tensor) or face_to_mesh.dtype not in (torch.int32, torch.int64):
            raise TypeError(
                f"face_to_mesh must be an int torch.Tensor of shape (F,), got {face_to_mesh!r:.80}"
            )
        if face_to_mesh.shape != (faces.shape[0],):
            raise ValueError(
                f"face_to_mesh must have shape ({faces.shape[0]},), got {tuple(face_to_mesh.shape)}"
            )
        if face_to_mesh.numel() and int(face_to_mesh.min()) < 0:
            raise ValueError("face_to_mesh must hold mesh indices >= 0")
