"""Procedural geometry and textures of the built-in synthetic scenes (numpy + trimesh, float64, z-up world).

A scene is a list of :class:`Part` (closed objects and open surfaces). Every part carries its albedo as a function
of the 3D surface point (a procedural texture) or as per-vertex colours interpolated with barycentrics. Geometry is
deterministic and independent of the seed (the seed only moves the cameras), so every seed shares one ground truth.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import trimesh

AlbedoFn = Callable[[np.ndarray], np.ndarray]  # (N, 3) points -> (N, 3) albedo in [0, 1]

KNOT_SAMPLES = 480  # samples along the torus-knot centre line (edge length ~0.014 at the default size)
KNOT_TUBE_SIDES = 40  # samples around the tube
GROUND_CELLS = 24  # ground patch tessellation per side: vertex colours of gt_mesh.ply resolve the checker
SPHERE_RINGS = 32  # latitude rings of the tabletop sphere cap
TEXTURE_PHASE = np.array([0.31, 0.17, 0.43])  # texture grid offset in cells, see checker()
CYLINDER_SECTIONS = 64  # segments around cylinders and sphere rings (chord error ~1e-3 of the radius)


@dataclass(frozen=True)
class Part:
    """One object of a scene.

    Attributes:
        vertices: (V, 3) float64 world positions.
        faces: (F, 3) int64, counter-clockwise seen from outside.
        albedo: procedural texture, points (N, 3) -> albedo (N, 3) in [0, 1]; used when both colour arrays are None.
        vertex_colors: (V, 3) float64 albedo in [0, 1] interpolated with barycentrics, or None.
        face_colors: (F, 3) float64 albedo in [0, 1], constant per face, or None.
    """

    vertices: np.ndarray
    faces: np.ndarray
    albedo: AlbedoFn | None = None
    vertex_colors: np.ndarray | None = None
    face_colors: np.ndarray | None = None

    def albedo_at_vertices(self) -> np.ndarray:
        """(V, 3) albedo at the vertices (the colours written into gt_mesh.ply)."""
        if self.vertex_colors is not None:
            return self.vertex_colors
        if self.face_colors is not None:  # average of the incident faces
            acc = np.zeros((len(self.vertices), 3))
            count = np.zeros(len(self.vertices))
            for k in range(3):
                np.add.at(acc, self.faces[:, k], self.face_colors)
                np.add.at(count, self.faces[:, k], 1.0)
            return acc / np.maximum(count, 1.0)[:, None]
        assert self.albedo is not None, "a Part needs a texture or colours"
        return self.albedo(self.vertices)


def checker(points: np.ndarray, cell: float) -> np.ndarray:
    """(N,) 0/1 parity of the 3D checkerboard with cubic cells of side ``cell``.

    The grid is shifted by ``TEXTURE_PHASE * cell`` so that no face of a scene (the ground z = 0, a box top) lies
    on a cell boundary, where float32 hit points would flip the parity at random.
    """
    idx = np.floor(points / cell + TEXTURE_PHASE).astype(np.int64)
    return (idx.sum(axis=-1) & 1).astype(np.float64)


def checker_albedo(base: tuple[float, float, float], *, cell: float, dark: float = 0.45) -> AlbedoFn:
    """Base colour modulated by a 3D checker: light cells ``base``, dark cells ``dark * base``."""
    base_arr = np.asarray(base, dtype=np.float64)

    def fn(points: np.ndarray) -> np.ndarray:
        light = checker(points, cell)
        return base_arr[None] * (dark + (1.0 - dark) * light)[:, None]

    return fn


def stripes_albedo(
    base: tuple[float, float, float], second: tuple[float, float, float], *, axis: int, period: float
) -> AlbedoFn:
    """Two colours alternating in bands of ``period / 2`` along a world axis."""
    a = np.asarray(base, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64)

    def fn(points: np.ndarray) -> np.ndarray:
        band = np.floor(points[:, axis] / (0.5 * period) + TEXTURE_PHASE[axis]).astype(np.int64) & 1
        return np.where(band[:, None] == 1, b[None], a[None])

    return fn


def rainbow_albedo(*, cell: float) -> AlbedoFn:
    """Hue running once around the z axis (azimuth), times a 3D checker: every surface patch is distinct."""

    def fn(points: np.ndarray) -> np.ndarray:
        hue = (np.arctan2(points[:, 1], points[:, 0]) / (2 * np.pi)) % 1.0
        # HSV -> RGB with S = 0.75, V = 1 (piecewise-linear hue wheel)
        k = (np.array([5.0, 3.0, 1.0])[None] + hue[:, None] * 6.0) % 6.0
        rgb = 1.0 - 0.75 * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
        light = checker(points, cell)
        return rgb * (0.55 + 0.45 * light)[:, None]

    return fn


def torus_knot(
    *, p: int = 2, q: int = 3, radius: float = 0.62, amplitude: float = 0.3, tube: float = 0.16
) -> tuple[np.ndarray, np.ndarray]:
    """A closed, watertight tube around a (p, q) torus knot, centred at the origin, z-up.

    Centre line: ``c(t) = ((R + a cos qt) cos pt, (R + a cos qt) sin pt, a sin qt)``; the tube uses the Frenet
    frame (periodic, since the curvature never vanishes on a torus knot), so the grid closes in both directions.

    Returns:
        vertices (KNOT_SAMPLES * KNOT_TUBE_SIDES, 3), faces (2 * V, 3), outward oriented.
    """
    t = np.linspace(0.0, 2 * np.pi, KNOT_SAMPLES, endpoint=False)
    r = radius + amplitude * np.cos(q * t)
    c = np.stack([r * np.cos(p * t), r * np.sin(p * t), amplitude * np.sin(q * t)], -1)
    dr = -amplitude * q * np.sin(q * t)
    d1 = np.stack([dr * np.cos(p * t) - r * p * np.sin(p * t), dr * np.sin(p * t) + r * p * np.cos(p * t),
                   amplitude * q * np.cos(q * t)], -1)  # fmt: skip
    ddr = -amplitude * q * q * np.cos(q * t)
    d2 = np.stack(
        [
            ddr * np.cos(p * t) - 2 * dr * p * np.sin(p * t) - r * p * p * np.cos(p * t),
            ddr * np.sin(p * t) + 2 * dr * p * np.cos(p * t) - r * p * p * np.sin(p * t),
            -amplitude * q * q * np.sin(q * t),
        ],
        -1,
    )
    tangent = d1 / np.linalg.norm(d1, axis=-1, keepdims=True)
    normal = d2 - (d2 * tangent).sum(-1, keepdims=True) * tangent
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    binormal = np.cross(tangent, normal)
    s = np.linspace(0.0, 2 * np.pi, KNOT_TUBE_SIDES, endpoint=False)
    ring = np.cos(s)[None, :, None] * normal[:, None] + np.sin(s)[None, :, None] * binormal[:, None]
    vertices = (c[:, None] + tube * ring).reshape(-1, 3)
    i = np.arange(KNOT_SAMPLES)[:, None]
    j = np.arange(KNOT_TUBE_SIDES)[None, :]
    i1 = (i + 1) % KNOT_SAMPLES
    j1 = (j + 1) % KNOT_TUBE_SIDES
    a, b = i * KNOT_TUBE_SIDES + j, i1 * KNOT_TUBE_SIDES + j
    c_, d = i1 * KNOT_TUBE_SIDES + j1, i * KNOT_TUBE_SIDES + j1
    faces = np.concatenate([np.stack([a, b, c_], -1).reshape(-1, 3), np.stack([a, c_, d], -1).reshape(-1, 3)])
    return _outward(vertices, faces)


def grid_patch(half_size: float, cells: int, *, z: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """An open square patch ``[-h, h]^2`` at height ``z``, normal +z, ``cells x cells`` quads."""
    g = np.linspace(-half_size, half_size, cells + 1)
    x, y = np.meshgrid(g, g, indexing="xy")
    vertices = np.stack([x.ravel(), y.ravel(), np.full(x.size, z)], -1)
    i = np.arange(cells)[:, None]
    j = np.arange(cells)[None, :]
    v00 = i * (cells + 1) + j
    v01, v10, v11 = v00 + 1, v00 + cells + 1, v00 + cells + 2
    faces = np.concatenate(
        [np.stack([v00, v01, v11], -1).reshape(-1, 3), np.stack([v00, v11, v10], -1).reshape(-1, 3)]
    )
    return vertices, faces


def _outward(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip a closed mesh's winding if its signed volume is negative (faces then point outward)."""
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    if mesh.volume < 0:
        faces = faces[:, ::-1].copy()
    return vertices, faces.astype(np.int64)


def _orient_convex(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wind each face of a convex (possibly open) surface so that its normal points away from the centroid."""
    tri = vertices[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    inward = ((tri.mean(1) - vertices.mean(0)) * normal).sum(-1) < 0
    faces = np.where(inward[:, None], faces[:, ::-1], faces)
    return vertices, faces.astype(np.int64)


def _placed(vertices: np.ndarray, *, rotation_z: float = 0.0, translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    c, s = np.cos(rotation_z), np.sin(rotation_z)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return vertices @ R.T + np.asarray(translation, dtype=np.float64)


def open_box(size: float) -> tuple[np.ndarray, np.ndarray]:
    """A cube ``[-s/2, s/2]^2 x [0, s]`` without its bottom face (it stands on the ground)."""
    h = 0.5 * size
    vertices = np.array([[x, y, z] for z in (0.0, size) for y in (-h, h) for x in (-h, h)], dtype=np.float64)
    quads = [(4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]  # top, -y, +y, -x, +x
    faces = np.array([f for a, b, c, d in quads for f in ((a, b, c), (a, c, d))])
    return _orient_convex(vertices, faces)


def open_cylinder(radius: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """A cylinder standing on z = 0: side wall and top cap, no bottom cap."""
    n = CYLINDER_SECTIONS
    a = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    ring = np.stack([radius * np.cos(a), radius * np.sin(a)], -1)
    vertices = np.concatenate(
        [np.c_[ring, np.zeros(n)], np.c_[ring, np.full(n, height)], [[0.0, 0.0, height]]]
    )
    i = np.arange(n)
    j = (i + 1) % n
    side = np.concatenate([np.stack([i, j, j + n], -1), np.stack([i, j + n, i + n], -1)])
    cap = np.stack([i + n, j + n, np.full(n, 2 * n)], -1)
    return _orient_convex(vertices, np.concatenate([side, cap]))


def sphere_above_ground(radius: float, center_z: float) -> tuple[np.ndarray, np.ndarray]:
    """The part ``z >= 0`` of a sphere centred at ``(0, 0, center_z)``: latitude rings up to the pole."""
    rings, n = SPHERE_RINGS, CYLINDER_SECTIONS
    polar_max = np.arccos(np.clip(-center_z / radius, -1.0, 1.0))  # polar angle (from +z) where z = 0
    polar = np.linspace(0.0, polar_max, rings + 1)[1:]
    a = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    pts = np.stack([np.sin(polar)[:, None] * np.cos(a)[None], np.sin(polar)[:, None] * np.sin(a)[None],
                    np.repeat(np.cos(polar)[:, None], n, 1)], -1).reshape(-1, 3)  # fmt: skip
    vertices = np.concatenate([[[0.0, 0.0, 1.0]], pts]) * radius + np.array([0.0, 0.0, center_z])
    i = np.arange(n)
    j = (i + 1) % n
    faces = [np.stack([np.zeros(n, dtype=np.int64), 1 + i, 1 + j], -1)]
    for r in range(rings - 1):
        a0, a1 = 1 + r * n, 1 + (r + 1) * n
        faces += [np.stack([a0 + i, a1 + i, a1 + j], -1), np.stack([a0 + i, a1 + j, a0 + j], -1)]
    vertices[-n:, 2] = 0.0  # the last ring lies exactly on the ground (cos rounding)
    return _orient_convex(vertices, np.concatenate(faces))


def object_scene() -> list[Part]:
    """The "object" scene: one closed, watertight (2, 3) torus knot with a hue-around-z x checker texture."""
    vertices, faces = torus_knot()
    return [Part(vertices, faces, albedo=rainbow_albedo(cell=0.2))]


def tabletop_scene() -> list[Part]:
    """The "tabletop" scene: a checkered open ground patch with a box, a sphere and a cylinder standing on it.

    The objects end at the ground plane with open bottoms, so the ground-truth mesh holds no hidden geometry
    below the ground and no coplanar faces; the ground patch is finite, so the background shows around it.
    """
    ground_v, ground_f = grid_patch(0.95, GROUND_CELLS)
    box_v, box_f = open_box(0.5)
    sphere_v, sphere_f = sphere_above_ground(0.3, 0.26)
    cyl_v, cyl_f = open_cylinder(0.2, 0.65)
    return [
        Part(ground_v, ground_f, albedo=checker_albedo((0.85, 0.82, 0.75), cell=0.19, dark=0.35)),
        Part(_placed(box_v, rotation_z=0.5, translation=(-0.42, -0.3, 0.0)), box_f,
             albedo=checker_albedo((0.85, 0.3, 0.2), cell=0.125)),
        Part(_placed(sphere_v, translation=(0.45, -0.25, 0.0)), sphere_f,
             albedo=stripes_albedo((0.2, 0.45, 0.9), (0.95, 0.95, 0.9), axis=2, period=0.15)),
        Part(_placed(cyl_v, translation=(0.05, 0.5, 0.0)), cyl_f,
             albedo=stripes_albedo((0.25, 0.75, 0.3), (0.95, 0.85, 0.2), axis=2, period=0.2)),
    ]  # fmt: skip


SCENE_BUILDERS: dict[str, Callable[[], list[Part]]] = {"object": object_scene, "tabletop": tabletop_scene}
