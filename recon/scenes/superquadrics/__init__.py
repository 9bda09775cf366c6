"""Superquadric blocks (Differentiable Blocks World, spec superquadrics.md): the parts that do not render.

Modules, each pure and tested on its own:

- ``tessellation``: icosphere (built here), UV sphere, background sphere, ground square;
- ``geometry``: exponent/scale activations, signed power map, rot6d, block vertices, implicit form and sdf proxy;
- ``blocks``: ``BlockSet`` (the raw parameters as plain tensors) and its initialisation;
- ``template``: the shared block template (base mesh, fixed angles, atlas) from the config;
- ``environment``: background sphere and ground plane with UVs, the ground pose;
- ``uv``: spherical atlas with seam and pole fixes, circular texture padding, texture decimation;
- ``frame``: the canonical frame ``T_canon_world`` from the training cameras;
- ``losses``: opacity rules, parsimony, texture TV, overlap;
- ``curriculum``: ``stage_at(fraction, cfg)`` and the σ conversion to pixels;
- ``config``: ``SuperquadricsConfig``;
- ``export``: ``primitives.json`` (write/load/rebuild), textured OBJ/MTL/PNG and GLB.

and the scene itself:

- ``scene``: ``SuperquadricScene`` (rendering through ``recon.renderers.raster``: hard environment pass, soft layered
  block pass, "over"/"reference" composite; param groups, regularisers, native mesh export).

The curriculum strategy lives in ``recon.train.superquadrics_strategy``, the method in
``recon.train.methods.superquadrics``, multi-seed restarts in ``recon.train.restarts``.
Import submodules explicitly, e.g. ``from recon.scenes.superquadrics.geometry import rot6d_to_matrix``.
"""
