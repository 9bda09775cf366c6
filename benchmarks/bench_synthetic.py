"""Time the built-in synthetic scenes (default: 100 train + 50 test views at 200x200) and print a table.

Usage:
    .venv/bin/python benchmarks/bench_synthetic.py [--views 100] [--test-views 50] [--resolution 200]
        [--meshes /work/shared/data/meshes]

Requirement (issue 2): each built-in scene writes in under 30 s on a 2-core CPU.
"""

import argparse
import tempfile
import time
from pathlib import Path

from recon.datasets.synthetic import SCENES, write_mesh_scene, write_scene


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--views", type=int, default=100)
    parser.add_argument("--test-views", type=int, default=50)
    parser.add_argument("--resolution", type=int, default=200)
    parser.add_argument(
        "--meshes", type=Path, default=None, help="also time every *.obj/*.ply in this folder"
    )
    args = parser.parse_args()
    jobs = [(name, lambda out, n=name: write_scene(n, out, **counts)) for name in SCENES]
    counts = dict(views=args.views, test_views=args.test_views, resolution=args.resolution)
    if args.meshes is not None:
        for path in sorted([*args.meshes.glob("*.obj"), *args.meshes.glob("*.ply")]):
            jobs.append((f"mesh:{path.name}", lambda out, p=path: write_mesh_scene(p, out, **counts)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, job in jobs:
            start = time.perf_counter()
            out = job(Path(tmp) / name.replace(":", "_"))
            seconds = time.perf_counter() - start
            size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
            rows.append((name, seconds, size_mb))
    views = args.views + args.test_views
    print(
        f"synthetic scenes: {args.views} train + {args.test_views} test views at {args.resolution}x{args.resolution}"
    )
    print(f"{'scene':<28} {'seconds':>8} {'ms/view':>8} {'MB':>7}")
    for name, seconds, size_mb in rows:
        print(f"{name:<28} {seconds:8.2f} {1000 * seconds / views:8.1f} {size_mb:7.1f}")


if __name__ == "__main__":
    main()
