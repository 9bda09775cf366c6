"""Core types and maths: cameras, rays, meshes, transforms. No I/O, no kernels, no nn.Module."""

from recon.core.camera import Camera, CameraModel
from recon.core.errors import NotAvailableYet, ReconError
from recon.core.mesh import Mesh
from recon.core.rays import Rays
from recon.core.render import (
    EikonalSamples,
    MissingRenderOutput,
    PrimitiveStats,
    RenderCapabilities,
    RenderOutput,
    require_capabilities,
)
from recon.core.shapes import Backend

__all__ = [
    "Backend",
    "Camera",
    "CameraModel",
    "EikonalSamples",
    "Mesh",
    "MissingRenderOutput",
    "NotAvailableYet",
    "PrimitiveStats",
    "Rays",
    "ReconError",
    "RenderCapabilities",
    "RenderOutput",
    "require_capabilities",
]
