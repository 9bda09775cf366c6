"""The shared differentiable renderer (``recon.renderers``): splat, volume, raster and isosurface op families.

Import-light on purpose: importing this package (or ``recon``) loads neither Warp nor any kernel; each op family
imports its fast backend lazily on first use (see ``recon.renderers._backend``).
"""
