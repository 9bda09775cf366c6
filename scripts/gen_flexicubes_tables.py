"""Generate ``renderers/isosurface/flexicubes_tables.py`` from the Dual Marching Cubes rules.

Run from the repository root: ``python scripts/gen_flexicubes_tables.py`` (``--check`` only compares). The output is
deterministic: running the script again reproduces the committed file byte for byte (a test checks this).

Rules (Nielson, *Dual Marching Cubes*, 2004; the case/edge conventions of FlexiCubes, Shen et al. 2023):

* Corner ``c`` of a cube sits at offset ``(c & 1, (c >> 1) & 1, (c >> 2) & 1)``; case id ``= sum 2^c`` over the
  *inside* corners (``s < 0``).
* Edges are numbered as in FlexiCubes (0-3 and 4-7 along x/z around y = 0 and y = 1, 8-11 along y); each edge is
  stored lower corner first.
* On every cube face the crossed edges are joined by iso-curve segments. A face with 4 crossed edges (two inside
  corners on one diagonal) is ambiguous; the segments there cut off each *inside* corner (the outside corners are
  connected across the face). This depends on the face's signs only, so two cubes sharing a face agree.
* The segments form closed loops on the cube's boundary; each loop bounds one surface patch, which gets one dual
  vertex: the crossed edges of a loop form one group of ``dmc_table`` (sorted; groups ordered by their smallest
  edge).
* ``check_table``: a case with exactly one ambiguous face whose 4 crossed edges all lie in one loop (the DMC cases
  C16/C19) makes a non-manifold edge when the neighbour across that face has the same problem; FlexiCubes then
  inverts both case ids (the complementary case splits that loop). Row ``[flag, dx, dy, dz, 255 - case]``.
"""

import argparse
import sys
from pathlib import Path

CORNERS = [((c & 1), (c >> 1) & 1, (c >> 2) & 1) for c in range(8)]
EDGES = [(0, 1), (1, 5), (4, 5), (0, 4), (2, 3), (3, 7), (6, 7), (2, 6), (0, 2), (1, 3), (5, 7), (4, 6)]
OUTPUT = Path(__file__).resolve().parents[1] / "renderers" / "isosurface" / "flexicubes_tables.py"


def _faces() -> list[tuple[tuple[int, int, int], list[int]]]:
    """The 6 cube faces as (outward direction, corners in cyclic order)."""
    faces = []
    for axis in range(3):
        for side in (0, 1):
            corners = [c for c in range(8) if CORNERS[c][axis] == side]
            # cyclic order: sort by angle in the face plane (corner offsets 00, 10, 11, 01)
            u, v = [a for a in range(3) if a != axis]
            order = {(0, 0): 0, (1, 0): 1, (1, 1): 2, (0, 1): 3}
            corners.sort(key=lambda c, u=u, v=v: order[(CORNERS[c][u], CORNERS[c][v])])
            direction = [0, 0, 0]
            direction[axis] = 1 if side else -1
            faces.append((tuple(direction), corners))
    return faces


def _edge(a: int, b: int) -> int:
    return EDGES.index((min(a, b), max(a, b)))


def _face_segments(case: int, corners: list[int]) -> tuple[list[tuple[int, int]], bool]:
    """Iso-curve segments (pairs of edge ids) on one face and whether the face is ambiguous."""
    inside = [(case >> c) & 1 for c in corners]
    crossed = [_edge(corners[i], corners[(i + 1) % 4]) for i in range(4) if inside[i] != inside[(i + 1) % 4]]
    if len(crossed) == 2:
        return [(crossed[0], crossed[1])], False
    if len(crossed) == 0:
        return [], False
    # Ambiguous: cut off each inside corner with the segment joining its two face edges.
    segments = []
    for i in range(4):
        if inside[i]:
            segments.append((_edge(corners[i - 1], corners[i]), _edge(corners[i], corners[(i + 1) % 4])))
    return segments, True


def _groups(case: int) -> tuple[list[list[int]], list[tuple[tuple[int, int, int], list[int]]]]:
    """Edge groups (loops) of a case and its ambiguous faces as (direction, crossed edges)."""
    parent = list(range(12))

    def find(e: int) -> int:
        while parent[e] != e:
            e = parent[e]
        return e

    crossed: set[int] = set()
    ambiguous = []
    for direction, corners in _faces():
        segments, is_ambiguous = _face_segments(case, corners)
        for a, b in segments:
            crossed.update((a, b))
            parent[find(a)] = find(b)
        if is_ambiguous:
            ambiguous.append((direction, sorted({e for s in segments for e in s})))
    loops: dict[int, list[int]] = {}
    for e in sorted(crossed):
        loops.setdefault(find(e), []).append(e)
    return sorted(loops.values()), ambiguous


def build_tables() -> tuple[list, list, list]:
    """``(dmc_table 256x4x7, num_vd_table 256, check_table 256x5)`` as nested lists."""
    dmc, num_vd, check = [], [], []
    for case in range(256):
        groups, ambiguous = _groups(case)
        assert len(groups) <= 4 and all(len(g) <= 7 for g in groups)
        dmc.append([g + [-1] * (7 - len(g)) for g in groups] + [[-1] * 7] * (4 - len(groups)))
        num_vd.append(len(groups))
        row = [0, 0, 0, 0, 0]
        if len(ambiguous) == 1:
            direction, face_edges = ambiguous[0]
            if any(set(face_edges) <= set(g) for g in groups):
                row = [1, *direction, 255 - case]
        check.append(row)
    return dmc, num_vd, check


def render() -> str:
    """The text of ``flexicubes_tables.py``."""
    dmc, num_vd, check = build_tables()
    lines = [
        '"""FlexiCubes / Dual Marching Cubes tables. GENERATED by scripts/gen_flexicubes_tables.py: do not edit.',
        "",
        "Corner ``c`` of a cube sits at offset ``CORNER_OFFSETS[c] = (c & 1, (c >> 1) & 1, (c >> 2) & 1)``; the case",
        "id is ``sum(2**c)`` over inside corners (``s < 0``). ``EDGE_CORNERS[e]`` = (lower corner, upper corner).",
        "``DMC_TABLE[case][g]`` lists the crossed edges (padded with -1) of dual vertex ``g``; ``NUM_VD_TABLE[case]``",
        "counts the dual vertices; ``CHECK_TABLE[case] = [flag, dx, dy, dz, inverted case]`` marks the C16/C19 cases",
        "with the direction of their ambiguous face.",
        '"""',
        "",
        "# fmt: off",
        f"CORNER_OFFSETS = {CORNERS!r}",
        f"EDGE_CORNERS = {EDGES!r}",
        "",
        "DMC_TABLE = [",
        *(f"    {row!r}," for row in dmc),
        "]",
        "",
        "NUM_VD_TABLE = [",
        *("    " + ", ".join(map(str, num_vd[i : i + 16])) + "," for i in range(0, 256, 16)),
        "]",
        "",
        "CHECK_TABLE = [",
        *(f"    {row!r}," for row in check),
        "]",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed file")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    text = render()
    if args.check:
        same = args.output.exists() and args.output.read_text() == text
        print(f"{args.output}: {'up to date' if same else 'DIFFERS'}")
        return 0 if same else 1
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
