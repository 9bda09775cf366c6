"""Input encodings for neural fields: multiresolution hash grid (reference + Warp), spherical harmonics,
``trunc_exp`` and the unbounded-scene contraction. Importing this package does not import Warp."""

from recon.renderers.encoding.activations import trunc_exp
from recon.renderers.encoding.api import (
    HashGrid,
    HashGridConfig,
    hash_grid_encode,
    log2_size_for_rows,
    table_growth_index,
)
from recon.renderers.encoding.contraction import contract_to_unisphere, uncontract_from_unisphere
from recon.renderers.encoding.layout import HASH_PRIMES, HashGridLayout
from recon.renderers.encoding.sh import SH_DEGREE, spherical_harmonics

__all__ = [
    "HASH_PRIMES",
    "SH_DEGREE",
    "HashGrid",
    "HashGridConfig",
    "HashGridLayout",
    "contract_to_unisphere",
    "hash_grid_encode",
    "log2_size_for_rows",
    "spherical_harmonics",
    "table_growth_index",
    "trunc_exp",
    "uncontract_from_unisphere",
]
