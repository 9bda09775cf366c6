"""Blender / NeRF-synthetic ``transforms_{train,val,test}.json`` (and recon's synthetic scenes).

Each split file holds ``camera_angle_x`` (horizontal field of view, radians) and ``frames`` with ``file_path``
(often without suffix: ``./train/r_0`` is ``train/r_0.png``) and ``transform_matrix`` (camera -> world, OpenGL
axes: x right, y up, z back). ``fx = 0.5 * W / tan(0.5 * camera_angle_x)``, ``fy = fx`` unless
``camera_angle_y`` or ``fl_x``/``fl_y``/``cx``/``cy`` say otherwise; ``cx = W / 2``, ``cy = H / 2``. RGBA images are
composited over white unless ``white_background`` is false or a background is given; alpha is kept as the mask.

recon's synthetic scenes add, per frame, ``depth_file_path`` (``.npy``, camera z in scene units, 0 = background)
and ``normal_file_path`` (``.npy`` world normals), and at the top level ``gt_mesh`` (a mesh in the world frame of
the cameras) and ``white_background``. All are optional. The world frame is kept as is (no normalisation); the
scene box is ``[-1.5, 1.5]^3`` or, with a ground-truth mesh, the mesh's bounds grown by 10%.
"""

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recon.datasets.base import LoadOptions, SceneDataset, every_nth_rule, every_nth_split, read_json
from recon.datasets.errors import DatasetError
from recon.datasets.nerfstudio import frame_from_json
from recon.datasets.paths import resolve_inside

BLENDER_BOX_HALF = 1.5  # NeRF-synthetic objects fit in [-1.5, 1.5]^3 (the box NeRF/instant-ngp use for them)
MESH_BOX_MARGIN = 0.1  # grow a ground-truth mesh's bounds by this fraction of its largest extent per side


def _mesh_box(path: Path) -> Tensor:
    import trimesh  # lazy: heavy import, only for datasets with a ground-truth mesh

    try:
        mesh = trimesh.load_mesh(path, process=False)
        bounds = np.asarray(mesh.bounds, dtype=np.float64)
    except Exception as exc:  # trimesh raises many exception types for a bad file
        raise DatasetError(
            f"cannot read ground-truth mesh {path}: expected a PLY/OBJ/GLB mesh ({exc})"
        ) from exc
    if bounds.shape != (2, 3) or not np.isfinite(bounds).all():
        raise DatasetError(f"ground-truth mesh {path} has no finite vertices: expected a non-empty mesh")
    pad = MESH_BOX_MARGIN * float((bounds[1] - bounds[0]).max())
    return torch.from_numpy(np.stack([bounds[0] - pad, bounds[1] + pad])).to(torch.float32)


def load_blender(root: Path, opts: LoadOptions) -> SceneDataset:
    """Load a Blender-format folder (see the module docstring)."""
    metas: dict[str, dict] = {}
    for split in ("train", "val", "test"):
        path = root / f"transforms_{split}.json"
        if path.is_file():
            metas[split] = read_json(path)
    if "train" not in metas:
        raise DatasetError(
            f"{root / 'transforms_train.json'} not found: expected a Blender-format training split"
        )
    splits = {}
    for split, top in metas.items():
        source = root / f"transforms_{split}.json"
        items = top.get("frames")
        if not isinstance(items, list):
            raise DatasetError(
                f"{source}: no 'frames' list; expected frames with file_path and transform_matrix"
            )
        splits[split] = [
            frame_from_json(root, top, item, i, source, allow_outside=opts.allow_outside_root)
            for i, item in enumerate(items)
        ]
    if not splits["train"]:
        raise DatasetError(
            f"{root / 'transforms_train.json'} has no frames: expected at least one training view"
        )
    rule = "explicit files (transforms_{train,val,test}.json)"
    if "test" not in splits:
        if "val" in splits:
            splits["test"] = splits["val"]
            rule = "explicit files; test = transforms_val.json (no transforms_test.json)"
        else:
            splits = every_nth_split(splits["train"], opts.test_every)
            rule = every_nth_rule(opts.test_every) + " (only transforms_train.json present)"
    white = all(bool(m.get("white_background", True)) for m in metas.values())
    bg = opts.background if opts.background is not None else (torch.ones(3) if white else torch.zeros(3))
    gt_mesh = None
    for split, top in metas.items():
        if top.get("gt_mesh"):
            what = f"gt_mesh of transforms_{split}.json"
            gt_mesh = resolve_inside(
                root, str(top["gt_mesh"]), what=what, allow_outside=opts.allow_outside_root
            )
            if not gt_mesh.is_file():
                raise DatasetError(
                    f"ground-truth mesh not found: {gt_mesh} (named by gt_mesh in transforms_{split}.json)"
                )
            break
    if gt_mesh is not None:
        box = _mesh_box(gt_mesh)
    else:
        box = torch.tensor([[-BLENDER_BOX_HALF] * 3, [BLENDER_BOX_HALF] * 3])
    return SceneDataset(
        format="blender",
        root=root,
        splits=splits,
        split_rule=rule,
        scene_box=box,
        background=bg,
        gt_mesh_path=gt_mesh,
        downscale=opts.downscale,
    )
