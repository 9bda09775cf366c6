"""recon: reconstruct 3D scenes from posed photographs and render them."""

__version__ = "0.1.0"
