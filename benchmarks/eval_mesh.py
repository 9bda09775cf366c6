"""Chamfer distance, F-score and normal consistency of a mesh file against a ground-truth mesh file (one frame).

Usage: python benchmarks/eval_mesh.py MESH GT_MESH [--samples N] [--thresholds F [F ...]] [--seed S] [--json]

Prints, from one set of ``N`` area-uniform samples per mesh (``recon.metrics.mesh_metrics``):
- the sampled Chamfer L1 (nearest *sample*, both directions averaged; it has a floor of about the sample spacing)
  beside the exact point-to-surface Chamfer L1 and L2 (distance to the other mesh's *triangles*), in units and as a
  fraction of the ground-truth bounding-box diagonal;
- the F-score (with precision and recall) at each threshold ``F * diagonal`` (default 0.5% and 1%), from the exact
  distances;
- the normal consistency (mean |cos| between a sample's face normal and the normal at its closest point on the
  other mesh, both directions averaged).
"""

import argparse

import torch
import trimesh

from recon.core import Mesh
from recon.metrics import mesh_metrics


def load(path: str) -> Mesh:
    m = trimesh.load(path, force="mesh", process=False)
    return Mesh(
        vertices=torch.as_tensor(m.vertices, dtype=torch.float64),
        faces=torch.as_tensor(m.faces, dtype=torch.long),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mesh")
    parser.add_argument("gt_mesh")
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.005, 0.01])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    pred, gt = load(args.mesh), load(args.gt_mesh)
    m = mesh_metrics(pred, gt, num_samples=args.samples, thresholds=tuple(args.thresholds), seed=args.seed)
    if args.json:
        print(m.to_json())
        return
    fs_heads = " | ".join(f"F @ {f.fraction:.2%} diag (P / R)" for f in m.fscores)
    fs_cells = " | ".join(f"{f.fscore:.3f} ({f.precision:.3f} / {f.recall:.3f})" for f in m.fscores)
    print(
        f"{args.mesh}: {pred.num_faces} faces; gt diagonal {m.diagonal:.5f}; {m.num_samples} samples per mesh"
    )
    print(
        f"| sampled Chamfer L1 | exact Chamfer L1 | exact L1 / diag | exact L2 | {fs_heads} | normal consistency |"
    )
    print("|---|---|---|---|" + "---|" * len(m.fscores) + "---|")
    print(f"| {m.sampled_chamfer_l1:.6f} ({m.sampled_chamfer_l1_over_diag:.4%}) | {m.chamfer_l1:.6f} "
          f"| {m.chamfer_l1_over_diag:.4%} | {m.chamfer_l2:.3e} | {fs_cells} | {m.normal_consistency:.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
