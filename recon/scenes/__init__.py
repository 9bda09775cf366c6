"""Scene representations behind one interface (``recon.scenes.base.Scene``): ``triangles`` (triangle splats).

Submodules are imported explicitly (``from recon.scenes.triangles import TriangleSplatScene``) so that importing one
representation never pays for the others.
"""
