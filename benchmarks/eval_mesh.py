"""Chamfer distance and F-score of a mesh file against a ground-truth mesh file (both in one world frame).

Usage: python benchmarks/eval_mesh.py MESH GT_MESH [--samples N] [--threshold-fraction F] [--json]

Prints Chamfer L1 (mean of nearest-surface distances, both directions averaged) in units and as a fraction of the
ground-truth bounding-box diagonal, and the F-score at ``F * diagonal`` (default 1%), using recon.metrics.
"""

import argparse
import json

import torch
import trimesh

from recon.core import Mesh
from recon.metrics import chamfer, fscore


def load(path: str) -> Mesh:
    m = trimesh.load(path, force="mesh", process=False)
    return Mesh(
        vertices=torch.as_tensor(m.vertices, dtype=torch.float32),
        faces=torch.as_tensor(m.faces, dtype=torch.long),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mesh")
    parser.add_argument("gt_mesh")
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--threshold-fraction", type=float, default=0.01)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    pred, gt = load(args.mesh), load(args.gt_mesh)
    diagonal = float((gt.bounds()[1] - gt.bounds()[0]).norm())
    ch = chamfer(pred, gt, num_samples=args.samples, generator=torch.Generator().manual_seed(0))
    fs = fscore(pred, gt, threshold=args.threshold_fraction * diagonal, num_samples=args.samples)
    report = {"mesh": args.mesh, "gt_mesh": args.gt_mesh, "faces": pred.num_faces, "diagonal": diagonal,
              "chamfer_l1": float(ch["l1"]), "chamfer_l1_over_diagonal": float(ch["l1"]) / diagonal,
              "fscore": float(fs), "fscore_threshold": args.threshold_fraction * diagonal}  # fmt: skip
    if args.json:
        print(json.dumps(report))
        return
    print(f"| mesh | faces | Chamfer L1 | L1 / diagonal | F-score @ {args.threshold_fraction:.0%} diag |")
    print("|---|---|---|---|---|")
    print(f"| {args.mesh} | {pred.num_faces} | {report['chamfer_l1']:.5f} | {report['chamfer_l1_over_diagonal']:.3%} "
          f"| {report['fscore']:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
