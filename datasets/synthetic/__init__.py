"""Built-in synthetic scenes: deterministic ray-cast renders of textured objects with exact ground-truth meshes.

Rendered by an exact CPU ray caster (Open3D/Embree, see :mod:`recon.datasets.synthetic.raycast`), independent of
``recon.renderers``, into Blender-format folders with alpha, camera-z depth, world normals and ``gt_mesh.ply``.

Example:
    >>> from recon.datasets.synthetic import write_scene
    >>> write_scene("object", Path("data/object"))  # doctest: +SKIP
"""

from recon.datasets.synthetic.writer import SCENES, write_mesh_scene, write_scene

__all__ = ["SCENES", "write_mesh_scene", "write_scene"]
