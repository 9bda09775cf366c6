"""Multiresolution hash-grid encoding (Instant-NGP, tiny-cuda-nn conventions): functional op and module."""

from dataclasses import dataclass, replace

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from recon.core.shapes import Backend
from recon.renderers._backend import resolve_backend
from recon.renderers.encoding import ref
from recon.renderers.encoding.layout import HashGridLayout

__all__ = ["HashGrid", "HashGridConfig", "hash_grid_encode", "log2_size_for_rows", "table_growth_index"]

TABLE_INIT_RANGE = 1e-4  # table ~ U(-1e-4, 1e-4) (Instant-NGP)
MAX_LOG2_HASHMAP_SIZE = 30  # the uint32 hash: tables of up to 2^30 entries per level


def hash_grid_encode(
    x: Float[Tensor, "N 3"],
    table: Float[Tensor, "P F"],
    layout: HashGridLayout,
    *,
    backend: Backend = "auto",
) -> Float[Tensor, "N LF"]:
    """Encode points with a multiresolution hash grid (spec section 2, tcnn convention).

    .. math::
        q = x\\,s_l + \\tfrac12,\\; c = \\lfloor q \\rfloor,\\; f = q - c,\\;
        \\phi_l(x) = \\sum_{k \\in \\{0,1\\}^3} \\prod_d (k_d ? f_d : 1 - f_d)\\,
        \\mathrm{table}[o_l + \\mathrm{index}_l(c + k)]

    with ``s_l = N_min b^l - 1`` and ``index_l`` dense (``c0 + c1 res + c2 res^2``) when ``res_l^3 <= T`` else
    the uint32 spatial hash ``(c0 ^ c1 * 2654435761 ^ c2 * 805459861) mod T``.

    Args:
        x: (N, 3) points, normalised to ``[0, 1]^3`` (outside, coordinates wrap in uint32 like tcnn: mask
            such points in the caller).
        table: (layout.num_params, F) feature table (level ``l`` owns rows ``offsets[l] : offsets[l] + sizes[l]``).
        layout: level geometry.
        backend: "auto" | "torch" | "warp" (Warp: float32 only).

    Returns:
        (N, L * F) features, level-major (``out[:, l * F + f]``).

    Differentiable w.r.t.: ``table`` (reference: autograd's index backward, i.e. ``index_add``; Warp: atomic
    adds) and ``x`` (``d phi / d x = s_l`` times the trilinear derivative; piecewise smooth across cells). The
    Warp path is first-order only (no double backward): use ``backend="torch"`` under ``create_graph=True``.

    Example:
        >>> layout = HashGridLayout(levels=2, log2_hashmap_size=10, base_resolution=4, per_level_scale=2.0)
        >>> table = torch.zeros(layout.num_params, 2)
        >>> hash_grid_encode(torch.rand(5, 3), table, layout, backend="torch").shape
        torch.Size([5, 4])
    """
    if x.ndim != 2 or x.shape[-1] != 3:
        raise ValueError(f"x must have shape (N, 3), got {tuple(x.shape)}")
    if table.ndim != 2 or table.shape[0] != layout.num_params or table.shape[1] != layout.features_per_level:
        raise ValueError(
            f"table must have shape ({layout.num_params}, {layout.features_per_level}), got {tuple(table.shape)}"
        )
    if table.dtype != x.dtype:
        raise TypeError(f"x and table must share a dtype, got {x.dtype} and {table.dtype}")
    if resolve_backend(backend, x, table, op="encoding.hash_grid") == "warp":
        from recon.renderers.encoding import warp_impl

        return warp_impl.hash_grid_encode(x, table, layout)
    return ref.hash_grid_encode(x, table, layout)


@dataclass(frozen=True)
class HashGridConfig:
    """Hash-grid hyper-parameters (defaults: Instant-NGP NeRF, spec section 2)."""

    levels: int = 16
    """Number of levels L."""
    features_per_level: int = 2
    """Features F per level."""
    log2_hashmap_size: int = 19
    """log2 of the entries T per level."""
    base_resolution: int = 16
    """Coarsest resolution N_min."""
    max_resolution: int = 4096
    """Finest resolution N_max (sets the per-level scale b)."""

    @property
    def layout(self) -> HashGridLayout:
        scale = HashGridLayout.scale_for(self.base_resolution, self.max_resolution, self.levels)
        return HashGridLayout(
            levels=self.levels,
            features_per_level=self.features_per_level,
            log2_hashmap_size=self.log2_hashmap_size,
            base_resolution=self.base_resolution,
            per_level_scale=scale,
        )


class HashGrid(nn.Module):
    """Learnable hash-grid encoding: ``forward(x (N, 3) in [0, 1]^3) -> (N, L * F)``.

    Example:
        >>> grid = HashGrid(HashGridConfig(levels=4, log2_hashmap_size=12, max_resolution=64))
        >>> grid(torch.rand(8, 3), backend="torch").shape
        torch.Size([8, 8])
    """

    def __init__(
        self, cfg: HashGridConfig = HashGridConfig(), *, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.layout = cfg.layout
        init = torch.rand((self.layout.num_params, cfg.features_per_level), generator=generator)
        self.table = nn.Parameter((init * 2.0 - 1.0) * TABLE_INIT_RANGE)

    @property
    def output_dim(self) -> int:
        return self.layout.output_dim

    def forward(self, x: Float[Tensor, "N 3"], *, backend: Backend = "auto") -> Float[Tensor, "N LF"]:
        return hash_grid_encode(x, self.table, self.layout, backend=backend)

    def set_log2_size(self, log2_hashmap_size: int) -> None:
        """Use tables of ``2^log2_hashmap_size`` entries per level; the caller sets ``table`` to the new layout's
        rows (``table_growth_index``, ``recon.train.table_growth``; a checkpoint's table on loading)."""
        if not 0 <= log2_hashmap_size <= MAX_LOG2_HASHMAP_SIZE:
            raise ValueError(
                f"log2_hashmap_size must be in [0, {MAX_LOG2_HASHMAP_SIZE}], got {log2_hashmap_size}"
            )
        self.cfg = replace(self.cfg, log2_hashmap_size=log2_hashmap_size)
        self.layout = self.cfg.layout


def table_growth_index(old: HashGridLayout, new: HashGridLayout) -> Int[Tensor, " P"]:
    """Rows of a table of layout ``old`` that a table of layout ``new`` (the same grid with ``T' >= T`` entries
    per level) copies, ``new_table = old_table[index]``, so that the encoding stays the same.

    Per level: a dense level stays dense with the same rows; a hashed level that stays hashed reads entry
    ``j mod T`` (the hash is taken modulo the size, and ``T`` divides ``T'``); a hashed level that becomes dense
    gives each cell ``c`` the entry ``hash(c) mod T`` it read before. Exact for every point whose interpolation
    corners lie inside the level's ``res^3`` cells: all of ``[0, 1]^3`` except, on a level with
    ``frac(s_l) > 1/2``, the band ``x_d > (ceil(s_l) - 1/2) / s_l`` along the box's far faces, whose outer corner
    coordinate ``res`` aliases another dense row (dense indexing wraps there; the hash did not).

    Args:
        old: the current layout.
        new: the grown layout (same levels, features, base resolution and per-level scale).

    Returns:
        (new.num_params,) int64 rows of the old table.

    Raises:
        ValueError: the layouts differ in anything but the table size, or ``T'`` is not a multiple of ``T``.
    """
    if replace(new, log2_hashmap_size=old.log2_hashmap_size) != old or new.hashmap_size % old.hashmap_size:
        raise ValueError(f"table_growth_index: {new} is not {old} with a larger table")
    parts = []
    for level in range(old.levels):
        offset, res = old.offsets[level], old.resolutions[level]
        if old.dense[level]:  # dense in both: the same rows
            rows = torch.arange(old.sizes[level], dtype=torch.long)
        elif not new.dense[level]:  # hashed in both: hash mod T' mod T = hash mod T
            rows = torch.arange(new.sizes[level], dtype=torch.long) % old.hashmap_size
        else:  # hashed -> dense: the cell's old hashed entry; alignment rows past res^3 are never read
            d = torch.arange(new.sizes[level], dtype=torch.long).clamp_max(res**3 - 1)
            cells = torch.stack([d % res, (d // res) % res, d // (res * res)], dim=-1)
            rows = ref.grid_index(cells, res, old.hashmap_size, dense=False)
        parts.append(rows + offset)
    return torch.cat(parts)


def log2_size_for_rows(cfg: HashGridConfig, rows: int) -> int:
    """The smallest ``log2 T`` whose layout of ``cfg`` has ``rows`` table rows (a table grown during training,
    restored from a checkpoint; ``cfg.log2_hashmap_size`` when it already has them).

    Raises:
        ValueError: no table size gives ``rows`` rows.
    """
    if cfg.layout.num_params == rows:
        return cfg.log2_hashmap_size
    for log2 in range(MAX_LOG2_HASHMAP_SIZE + 1):
        if replace(cfg, log2_hashmap_size=log2).layout.num_params == rows:
            return log2
    raise ValueError(f"no hash-table size gives {rows} rows for the grid {cfg}")
