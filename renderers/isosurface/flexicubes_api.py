"""FlexiCubes isosurface extraction on dense and sparse voxel grids (spec sparseflex.md sections 1-2).

Conventions (all FlexiCubes functions):

* Inside is ``s < 0``; faces are counter-clockwise seen from outside (``s > 0``).
* Grid: ``R`` voxels per axis over the cube ``[lo, hi]^3`` (``box``, default ``(-0.5, 0.5)``: the unit box of
  SparseFlex); corner ``(i, j, k)`` rests at ``lo + (i, j, k) h`` with ``h = (hi - lo) / R`` and moves to
  ``lo + (i, j, k) h + (h / 2)(1 - 1e-8) tanh(delta)`` (``deform`` is raw ``delta``, in units of half a cell after
  the tanh). In direct fitting ``s`` is in voxel units (signed distance / h).
* Corner order of a cube ``(0,0,0), (1,0,0), (0,1,0), (1,1,0), (0,0,1), (1,0,1), (0,1,1), (1,1,1)``
  (``c = dx + 2 dy + 4 dz``); the 12 edges are numbered as in FlexiCubes, as corner pairs (lower first)
  ``0-1, 1-5, 4-5, 0-4, 2-3, 3-7, 6-7, 2-6, 0-2, 1-3, 5-7, 4-6`` (``flexicubes_tables.EDGE_CORNERS``): x-edges 0, 2, 4,
  6, z-edges 1, 3, 5, 7, y-edges 8-11. ``weights`` rows are raw ``[beta (12, per edge), alpha (8, per corner),
  gamma (1)]``; dense cube ``(i, j, k)`` is row ``(i R + j) R + k``.
* Dense arrays are indexed ``[i, j, k]`` along x, y, z (``indexing="ij"``); flattened ones in that order.
"""

import torch
from jaxtyping import Float, Int
from torch import Tensor

from recon.core.shapes import Backend
from recon.renderers._backend import resolve_backend
from recon.renderers.isosurface import flexicubes_ref as ref
from recon.renderers.isosurface.flexicubes_losses import grid_edges, l_dev, sign_flip_loss, weight_regularizer
from recon.renderers.isosurface.flexicubes_types import FlexiCubesOutput, SparseVoxelGrid

__all__ = [
    "FlexiCubesOutput",
    "SparseVoxelGrid",
    "dense_voxel_grid",
    "flexicubes_dense",
    "flexicubes_sparse",
    "grid_edges",
    "l_dev",
    "merge_corner_values",
    "sign_flip_loss",
    "sparse_voxel_grid",
    "weight_regularizer",
]

NUM_WEIGHTS = 21  # beta 12, alpha 8, gamma 1 per voxel
CHUNK_PADDING = 2  # voxels around a chunk: quads need the 4 cubes of an edge (1), their ambiguity fix 1 more
DEFAULT_BOX = (-0.5, 0.5)


def sparse_voxel_grid(voxels: Int[Tensor, "Nv 3"], resolution: int) -> SparseVoxelGrid:
    """Build the sorted sparse grid (voxels, unique corners, ``voxel_corners``) of a set of active voxels.

    Args:
        voxels: (Nv, 3) integer voxel coordinates in ``[0, resolution)``, any order; duplicates are merged.
        resolution: ``R``, voxels per axis of the full grid.

    Returns:
        ``SparseVoxelGrid`` with voxels and corners sorted by ``(i (R+1) + j) (R+1) + k``. Per-voxel and per-corner
        parameters must follow its row order.

    Example:
        >>> grid = sparse_voxel_grid(torch.tensor([[1, 0, 0], [0, 0, 0]]), 4)
        >>> grid.voxels.tolist(), grid.num_corners, grid.voxel_corners[1].tolist()
        ([[0, 0, 0], [1, 0, 0]], 12, [4, 8, 6, 10, 5, 9, 7, 11])
    """
    if not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")
    if voxels.ndim != 2 or voxels.shape[-1] != 3:
        raise ValueError(f"voxels must have shape (Nv, 3), got {tuple(voxels.shape)}")
    if voxels.is_floating_point() or voxels.dtype == torch.bool:
        raise TypeError(f"voxels must be an integer tensor, got {voxels.dtype}")
    voxels = voxels.to(torch.int64)
    if voxels.numel() and (int(voxels.min()) < 0 or int(voxels.max()) >= resolution):
        raise ValueError(
            f"voxels must lie in [0, {resolution}), got range [{int(voxels.min())}, {int(voxels.max())}]"
        )
    keys = torch.unique(ref.linear_key(voxels, resolution))
    voxels = _decode(keys, resolution)
    offsets = ref.tables(voxels.device)["offsets"]
    corner_keys = ref.linear_key(voxels[:, None, :] + offsets, resolution)
    unique, inverse = torch.unique(corner_keys.reshape(-1), return_inverse=True)
    return SparseVoxelGrid(resolution, voxels, _decode(unique, resolution), inverse.reshape(-1, 8))


def dense_voxel_grid(resolution: int, device: torch.device | str = "cpu") -> SparseVoxelGrid:
    """All ``R^3`` voxels as a sparse grid: voxel rows are the dense linear cube index ``(i R + j) R + k`` and
    corner rows the dense vertex index ``(i (R+1) + j) (R+1) + k``."""
    axes = torch.arange(resolution, device=device)
    voxels = torch.stack(torch.meshgrid(axes, axes, axes, indexing="ij"), -1).reshape(-1, 3)
    return sparse_voxel_grid(voxels, resolution)


def merge_corner_values(
    grid: SparseVoxelGrid, values: Float[Tensor, "Nv 8 ..."]
) -> tuple[Float[Tensor, "Nc ..."], Float[Tensor, ""]]:
    """Average per-voxel corner predictions over the voxels sharing each corner (SparseFlex, spec section 2).

    .. math:: \\bar v_c = \\frac{1}{|V(c)|} \\sum_{v \\in V(c)} v_{v, c},\\qquad
        L_{cons} = \\mathrm{mean}_{v, c} (v_{v, c} - \\bar v_c)^2

    Args:
        grid: the sparse grid; ``values[v, c]`` belongs to corner ``grid.voxel_corners[v, c]``.
        values: (Nv, 8, *D) per-voxel corner values (``s``, ``delta``, colours ...).

    Returns:
        ``(merged (Nc, *D), consistency)``: the mean per corner and the consistency loss (0 when the voxels agree).

    Differentiable w.r.t.: ``values``.

    Example:
        >>> grid = sparse_voxel_grid(torch.tensor([[0, 0, 0], [1, 0, 0]]), 4)
        >>> merged, cons = merge_corner_values(grid, torch.stack([torch.zeros(8), torch.ones(8)]))
        >>> merged[grid.voxel_corners[0, 1]].item(), merged[0].item(), round(cons.item(), 4)
        (0.5, 0.0, 0.125)
    """
    if values.ndim < 2 or values.shape[:2] != (grid.num_voxels, 8):
        raise ValueError(
            f"values must have shape (Nv, 8, ...) with Nv = {grid.num_voxels}, got {tuple(values.shape)}"
        )
    index = grid.voxel_corners.reshape(-1)
    flat = values.reshape(grid.num_voxels * 8, -1)
    sums = torch.zeros((grid.num_corners, flat.shape[1]), dtype=flat.dtype, device=flat.device).index_add(
        0, index, flat
    )
    counts = torch.bincount(index, minlength=grid.num_corners).to(flat.dtype)
    merged = sums / counts[:, None]
    consistency = ((flat - merged[index]) ** 2).mean()
    return merged.reshape(grid.num_corners, *values.shape[2:]), consistency


def _decode(keys: Tensor, resolution: int) -> Tensor:
    n = resolution + 1
    return torch.stack([keys // (n * n), (keys // n) % n, keys % n], -1)


def _check_box(box: tuple[float, float]) -> tuple[float, float]:
    if len(box) != 2 or not float(box[0]) < float(box[1]):
        raise ValueError(f"box must be (lo, hi) with lo < hi, got {box!r}")
    return float(box[0]), float(box[1])


def _check_float(name: str, t: Tensor | None, shape: tuple[int, ...], like: Tensor) -> None:
    if t is None:
        return
    if t.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if t.dtype != like.dtype or t.device != like.device:
        raise TypeError(f"{name} must match s ({like.dtype} on {like.device}), got {t.dtype} on {t.device}")


def _dense_rows(name: str, t: Tensor | None, n: int, width: int, like: Tensor) -> Tensor | None:
    """``t`` of shape (n, n, n, width) or (n^3, width) as (n^3, width) rows."""
    if t is None:
        return None
    if t.shape not in ((n, n, n, width), (n**3, width)):
        raise ValueError(
            f"{name} must have shape ({n}, {n}, {n}, {width}) or ({n**3}, {width}), got {tuple(t.shape)}"
        )
    _check_float(name, t, t.shape, like)
    return t.reshape(-1, width)


def _impl(backend: str, tensors: list[Tensor], op: str):
    if resolve_backend(backend, *tensors, op=op) == "warp":
        from recon.renderers.isosurface import flexicubes_warp_impl

        return flexicubes_warp_impl
    return None


def flexicubes_dense(
    s: Float[Tensor, "..."],
    deform: Float[Tensor, "... 3"] | None = None,
    weights: Float[Tensor, "... 21"] | None = None,
    *,
    box: tuple[float, float] = DEFAULT_BOX,
    training: bool = False,
    backend: Backend = "auto",
) -> FlexiCubesOutput:
    """Extract the FlexiCubes mesh of a dense ``(R+1)^3`` grid (Shen et al. 2023, spec sparseflex.md section 1).

    .. math::
        u_e = \\frac{s_b\\alpha_b x'_a - s_a\\alpha_a x'_b}{s_b\\alpha_b - s_a\\alpha_a},\\qquad
        v_d = \\frac{\\sum_{e \\in d} \\beta_e u_e}{\\sum_{e \\in d} \\beta_e}

    One dual vertex per surface patch of each cube with a sign change (Dual Marching Cubes groups, ambiguous
    C16/C19 pairs inverted); one quad per crossed edge shared by 4 cubes, split by ``gamma`` (inference) or fanned
    around a gamma-weighted centre (training). See the module docstring for the grid conventions.

    Args:
        s: (R+1, R+1, R+1) or ((R+1)^3,) scalars at the grid corners; inside is ``s < 0``.
        deform: (R+1, R+1, R+1, 3) or ((R+1)^3, 3) raw corner offsets ``delta``, or None (no deformation).
        weights: (R, R, R, 21) or (R^3, 21) raw ``[beta 12, alpha 8, gamma 1]`` per cube, or None (raw 0).
        box: ``(lo, hi)`` of the cubic grid in world units.
        training: centre vertex + 4-triangle fan per quad (differentiable split) instead of the gamma diagonal.
        backend: "auto" | "torch" | "warp". Warp (float32) runs the dual-vertex stage (crossings, dual vertices,
            L_dev; forward and hand-written backward) and, on CUDA, the case classification as kernels; the integer
            bookkeeping (ambiguity fix, edge grouping, quads) and the triangulation are shared torch code.

    Returns:
        ``FlexiCubesOutput`` (vertices, faces, per-dual-vertex ``l_dev``, owning cube of each dual vertex as the
        dense linear index ``(i R + j) R + k``, grid edge of each quad). Empty when ``s`` has no sign change.

    Differentiable w.r.t.: ``s``, ``deform`` and ``weights`` (through the vertex positions and ``l_dev``; the
    connectivity is piecewise constant).

    Example:
        >>> g = torch.linspace(-0.5, 0.5, 9)
        >>> x, y, z = torch.meshgrid(g, g, g, indexing="ij")
        >>> out = flexicubes_dense((x**2 + y**2 + z**2).sqrt() - 0.3, backend="torch")
        >>> out.faces.shape[1], bool(((out.vertices.norm(dim=-1) - 0.3).abs() < 0.02).all())
        (3, True)
    """
    if not isinstance(s, Tensor) or not s.is_floating_point():
        raise TypeError("s must be a floating-point tensor")
    n = s.shape[0] if s.ndim == 3 else round(s.numel() ** (1 / 3)) if s.ndim == 1 else 0
    if n < 2 or s.numel() != n**3 or (s.ndim == 3 and s.shape != (n, n, n)):
        raise ValueError(f"s must have shape (R+1, R+1, R+1) or ((R+1)^3,) with R >= 1, got {tuple(s.shape)}")
    r = n - 1
    deform = _dense_rows("deform", deform, n, 3, s)
    weights = _dense_rows("weights", weights, r, NUM_WEIGHTS, s)
    box = _check_box(box)
    tensors = [t for t in (s, deform, weights) if t is not None]
    impl = _impl(backend, tensors, "isosurface.flexicubes_dense")
    s_grid = s.reshape(n, n, n)
    cases = (impl.dense_cube_cases if impl else ref.dense_cube_cases)(s_grid).reshape(-1)
    rows = torch.nonzero((cases > 0) & (cases < 255))[:, 0]
    coords = torch.stack([rows // (r * r), (rows // r) % r, rows % r], -1)
    corners = ref.linear_key(coords[:, None, :] + ref.tables(s.device)["offsets"], r)
    # Only the corners of surface cubes enter the mesh: deform and gather those (a few % of the grid).
    used, local = torch.unique(corners, return_inverse=True)
    x = ref.deformed_positions(_decode(used, r), None if deform is None else deform[used], r, box).to(s.dtype)
    cubes = ref.SurfaceCubes(
        coords, rows, local.reshape(-1, 8), ref.fix_ambiguity(cases[rows].long(), coords, r)
    )
    dual_fn = impl.dual_vertices_and_l_dev if impl else ref.dual_vertices_and_l_dev
    return _finish([_dual_mesh(x, s.reshape(-1)[used], cubes, weights, r, dual_fn)], weights, training, s)


def _dual_mesh(x, s, cubes: ref.SurfaceCubes, weights, resolution, dual_fn) -> ref.DualMesh:
    m = cubes.rows.numel()
    if weights is None:
        beta = torch.ones((m, 12), dtype=s.dtype, device=s.device)
        alpha = torch.ones((m, 8), dtype=s.dtype, device=s.device)
    else:
        beta, alpha, _ = ref.activate_weights(weights[cubes.rows])
    return ref.dual_mesh(x, s, cubes, beta, alpha, resolution, dual_fn)


def _finish(
    parts: list[ref.DualMesh], weights, training: bool, like: Tensor, chunked: bool = False
) -> FlexiCubesOutput:
    """Merge per-chunk dual meshes (dual vertices by key, quads by edge) and triangulate."""
    if not chunked:
        dm = parts[0]
    else:
        vd_key = torch.cat([p.vd_key for p in parts])
        order = torch.argsort(vd_key)
        vd_key = vd_key[order]
        quads = torch.searchsorted(vd_key, torch.cat([p.quads for p in parts]))  # chunk quads hold keys
        quad_edges = torch.cat([p.quad_edges for p in parts])
        by_edge = torch.argsort(quad_edges)
        dm = ref.DualMesh(
            torch.cat([p.vd for p in parts])[order],
            torch.cat([p.l_dev for p in parts])[order],
            torch.cat([p.vd_row for p in parts])[order],
            vd_key,
            quads[by_edge],
            quad_edges[by_edge],
        )
    if weights is None:
        gamma_vd = torch.ones(dm.vd.shape[0], dtype=like.dtype, device=like.device)
    else:
        gamma_vd = torch.sigmoid(weights[dm.vd_row, 20]) * ref.WEIGHT_SCALE + (1 - ref.WEIGHT_SCALE) / 2
    vertices, faces = ref.triangulate(dm.vd, dm.quads, gamma_vd, training)
    return FlexiCubesOutput(vertices, faces, dm.l_dev, dm.vd_row, dm.quad_edges)


def flexicubes_sparse(
    grid: SparseVoxelGrid,
    s: Float[Tensor, " Nc"],
    deform: Float[Tensor, "Nc 3"] | None = None,
    weights: Float[Tensor, "Nv 21"] | None = None,
    *,
    box: tuple[float, float] = DEFAULT_BOX,
    training: bool = False,
    chunks: int = 1,
    backend: Backend = "auto",
) -> FlexiCubesOutput:
    """Extract the FlexiCubes mesh of a sparse voxel grid (SparseFlex, He et al. 2025; spec section 2).

    Same extraction as :func:`flexicubes_dense` restricted to the active voxels: a quad is emitted only for a
    crossed edge shared by 4 *active* surface voxels, so where voxels are absent the surface stays open; the
    ambiguity fix looks its neighbour up among the active surface voxels (``searchsorted`` on the sorted keys) and
    an absent neighbour means no fix. Every corner of ``grid`` belongs to an active voxel, so no dummy corner is
    needed. With all voxels active the result equals the dense one.

    Args:
        grid: the active voxels and their corners (``sparse_voxel_grid``).
        s: (Nc,) scalars at ``grid.corners`` (inside ``s < 0``; voxel units in direct fitting).
        deform: (Nc, 3) raw corner offsets ``delta``, or None.
        weights: (Nv, 21) raw ``[beta 12, alpha 8, gamma 1]`` per voxel of ``grid.voxels``, or None (raw 0).
        box: ``(lo, hi)`` of the full cubic grid (default: the unit box ``[-0.5, 0.5]^3``).
        training: centre vertex + 4-triangle fan per quad instead of the gamma diagonal split.
        chunks: split the grid into ``chunks^3`` blocks (each padded by 2 voxels) extracted one after the other,
            to bound peak memory at high resolution; the result is identical to ``chunks=1``.
        backend: "auto" | "torch" | "warp" (see :func:`flexicubes_dense`).

    Returns:
        ``FlexiCubesOutput``; ``vertex_voxel`` indexes ``grid.voxels``.

    Differentiable w.r.t.: ``s``, ``deform`` and ``weights``.

    Example:
        >>> grid = dense_voxel_grid(8)
        >>> s = (grid.corners.float() / 8 - 0.5).norm(dim=-1) - 0.3
        >>> out = flexicubes_sparse(grid, s, backend="torch")
        >>> bool(((out.vertices.norm(dim=-1) - 0.3).abs() < 0.02).all())
        True
    """
    if not isinstance(grid, SparseVoxelGrid):
        raise TypeError(f"grid must be a SparseVoxelGrid (see sparse_voxel_grid), got {type(grid).__name__}")
    if not isinstance(s, Tensor) or not s.is_floating_point():
        raise TypeError("s must be a floating-point tensor")
    if s.shape != (grid.num_corners,):
        raise ValueError(f"s must have shape (Nc,) = ({grid.num_corners},), got {tuple(s.shape)}")
    _check_float("deform", deform, (grid.num_corners, 3), s)
    _check_float("weights", weights, (grid.num_voxels, NUM_WEIGHTS), s)
    if grid.voxel_corners.device != s.device:
        raise ValueError(
            f"grid is on {grid.voxel_corners.device} but s on {s.device}: move the grid with the parameters"
        )
    if not isinstance(chunks, int) or chunks < 1:
        raise ValueError(f"chunks must be a positive int, got {chunks!r}")
    box = _check_box(box)
    impl = _impl(backend, [t for t in (s, deform, weights) if t is not None], "isosurface.flexicubes_sparse")
    r = grid.resolution
    x = ref.deformed_positions(grid.corners, deform, r, box).to(s.dtype)
    cases = (impl.cube_cases if impl else ref.cube_cases)(s, grid.voxel_corners)
    rows = torch.nonzero((cases > 0) & (cases < 255))[:, 0]
    dual_fn = impl.dual_vertices_and_l_dev if impl else ref.dual_vertices_and_l_dev
    if chunks == 1 or rows.numel() == 0:
        coords = grid.voxels[rows]
        cubes = ref.SurfaceCubes(
            coords, rows, grid.voxel_corners[rows], ref.fix_ambiguity(cases[rows], coords, r)
        )
        return _finish([_dual_mesh(x, s, cubes, weights, r, dual_fn)], weights, training, s)
    parts = [
        _chunk(x, s, grid, rows, cases, weights, dual_fn, block, chunks)
        for block in torch.cartesian_prod(*[torch.arange(chunks)] * 3).tolist()
    ]
    return _finish([p for p in parts if p is not None], weights, training, s, chunked=True)


def _chunk(x, s, grid: SparseVoxelGrid, rows, cases, weights, dual_fn, block: list[int], chunks: int):
    """Dual mesh of one chunk, keeping the dual vertices of its own voxels and the quads of the edges whose lower
    corner it owns; ``quads`` hold dual vertex *keys* (``row * 4 + group``), resolved when the chunks merge."""
    r = grid.resolution
    size = -(-r // chunks)
    lo = torch.tensor(block, device=s.device) * size
    coords = grid.voxels[rows]
    in_region = ((coords >= lo - CHUNK_PADDING) & (coords < lo + size + CHUNK_PADDING)).all(-1)
    sub = rows[in_region]
    if sub.numel() == 0:
        return None
    sub_coords = grid.voxels[sub]
    cubes = ref.SurfaceCubes(
        sub_coords, sub, grid.voxel_corners[sub], ref.fix_ambiguity(cases[sub], sub_coords, r)
    )
    dm = _dual_mesh(x, s, cubes, weights, r, dual_fn)

    def owned(c: Tensor) -> Tensor:
        return (torch.div(c, size, rounding_mode="floor").clamp(max=chunks - 1) == lo // size).all(-1)

    own_vd = owned(grid.voxels[dm.vd_row])
    own_quad = owned(_decode(torch.div(dm.quad_edges, 3, rounding_mode="floor"), r))
    return ref.DualMesh(
        dm.vd[own_vd],
        dm.l_dev[own_vd],
        dm.vd_row[own_vd],
        dm.vd_key[own_vd],
        dm.vd_key[dm.quads[own_quad]],
        dm.quad_edges[own_quad],
    )
