"""``recon train sparseflex --init-from RUN_DIR``: the initial band from a trained nerf or neus run (spec
sparseflex.md section 4.1, "Alternatively sample ``s`` from a trained neural field").

The run's newest checkpoint is loaded and its field sampled at the corners of the sparseflex grid (the dataset's
scene cube at ``scene.resolution``), in the normalised frame both runs share:

* neus: ``s`` = the SDF in voxel units (its sign directly), clipped to ``scene.sdf_clip``;
* nerf: inside where ``sigma > tau`` with ``tau`` the density the nerf exports its mesh at (``scene.mesh_density``
  of that run, else ``0.01 / render_step_size``, nerf spec section 6), then the signed distance transform of that
  occupancy in voxel units (as the visual hull).

The band is the voxels with a sign change among their corners, dilated by ``scene.band_radius``
(``SparseFlexScene.from_corner_sdf``); no mask is needed.
"""

from pathlib import Path
from typing import Any

import torch

from recon.core.errors import ReconError
from recon.runs import RunError
from recon.scenes.fields import cube_box
from recon.scenes.nerf import MESH_DENSITY_RULE
from recon.scenes.sparseflex import SparseFlexScene, SparseFlexSceneConfig
from recon.scenes.sparseflex.field_init import density_corner_sdf, sdf_corner_values

__all__ = ["FIELD_METHODS", "scene_from_run"]

FIELD_METHODS = ("nerf", "neus")
"""Methods whose runs ``--init-from`` accepts."""


def _open_field_run(run_dir: str, dataset) -> tuple[str, Any]:
    """(method name, scene) of the field run ``run_dir`` after checking its method and dataset fingerprint."""
    from recon.datasets import dataset_info
    from recon.train.run_io import open_run_config
    from recon.train.trainer import load_scene

    flag = f"--init-from {run_dir}"
    if not Path(run_dir).is_dir():
        raise ReconError(f"{flag}: no such run directory (expected a trained nerf or neus run)")
    try:
        run, method, cfg = open_run_config(run_dir)
    except RunError as exc:
        raise ReconError(f"{flag}: {exc}") from exc
    if method.name not in FIELD_METHODS:
        raise ReconError(f"{flag}: a {method.name!r} run; expected a run of {' or '.join(FIELD_METHODS)}")
    try:
        run.check_dataset(dataset_info(dataset))
        scene, _ = load_scene(method, cfg, run, device="cpu")
    except RunError as exc:
        raise ReconError(f"{flag}: {exc}") from exc
    return method.name, scene


def scene_from_run(
    config: SparseFlexSceneConfig, dataset, run_dir: str, *, generator: torch.Generator
) -> SparseFlexScene:
    """A SparseFlex scene whose band surrounds the level set of the field trained in ``run_dir``.

    Args:
        config: the sparseflex scene configuration (resolution, band radius, clip).
        dataset: the dataset of this run; it must be the one ``run_dir`` was trained on (fingerprint).
        run_dir: a nerf or neus run directory with a checkpoint.
        generator: initialisation of the colour field.

    Raises:
        ReconError: a missing run, a run of another method, another dataset, or no checkpoint (naming
            ``--init-from``); a field with no surface in the cube.
    """
    name, field_scene = _open_field_run(run_dir, dataset)
    box = cube_box(dataset.scene_box.float())
    center, size = 0.5 * (box[0] + box[1]), float(box[1, 0] - box[0, 0])
    common = {"resolution": config.resolution, "center": center, "size": size, "clip": config.sdf_clip,
              "field_box": field_scene.aabb}  # fmt: skip
    if name == "neus":
        s = sdf_corner_values(field_scene.field.sdf, **common)
    else:
        fcfg = field_scene.config
        tau = fcfg.mesh_density if fcfg.mesh_density > 0 else MESH_DENSITY_RULE / fcfg.render_step_size
        s = density_corner_sdf(lambda x: field_scene.field.density(x).sigmas, threshold=tau, **common)
    try:
        return SparseFlexScene.from_corner_sdf(config, s, center, size, generator=generator)
    except ReconError as exc:
        raise ReconError(
            f"--init-from {run_dir}: the {name} field has no surface in the scene cube ({exc})"
        ) from exc
