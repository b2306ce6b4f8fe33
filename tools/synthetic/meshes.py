"""Triangle-mesh primitives for the synthetic scenes (numpy only, no mesh library needed).

Convention: metres, z up. Faces are counter-clockwise seen from outside, so
``cross(v1 - v0, v2 - v0)`` points out of a closed primitive (its signed volume is positive).
Vertices are shared where the surface is smooth (sphere, cylinder side, torus) and duplicated
along sharp edges (box faces, cylinder caps), so area-weighted vertex normals
(:func:`vertex_normals`) shade curved surfaces smoothly and flat faces flat.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class Mesh:
    vertices: np.ndarray  # [V, 3] float64
    faces: np.ndarray  # [F, 3] int64, CCW from outside

    def __post_init__(self):
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"Mesh vertices must be [V, 3], got {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"Mesh faces must be [F, 3], got {self.faces.shape}")

    def transformed(self, R: np.ndarray = None, t: Sequence[float] = (0.0, 0.0, 0.0)) -> "Mesh":
        """``x -> R x + t``; a reflection (det R < 0) flips the face order to stay outward."""
        v = self.vertices if R is None else self.vertices @ np.asarray(R, np.float64).T
        f = self.faces
        if R is not None and np.linalg.det(R) < 0:
            f = f[:, ::-1].copy()
        return Mesh(v + np.asarray(t, np.float64), f)

    def scaled(self, s: Sequence[float]) -> "Mesh":
        return self.transformed(np.diag(np.broadcast_to(np.asarray(s, np.float64), (3,))))

    def translated(self, t: Sequence[float]) -> "Mesh":
        return Mesh(self.vertices + np.asarray(t, np.float64), self.faces)

    @property
    def bounds(self) -> np.ndarray:  # [2, 3] (min, max)
        return np.stack([self.vertices.min(0), self.vertices.max(0)])


def merge(meshes: Iterable[Mesh]) -> Mesh:
    meshes = list(meshes)
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    return Mesh(np.concatenate([m.vertices for m in meshes]),
                np.concatenate([m.faces + o for m, o in zip(meshes, offsets)]))


def rot_z(angle: float) -> np.ndarray:  # [3, 3] rotation about +z (counter-clockwise seen from above)
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_x(angle: float) -> np.ndarray:  # [3, 3]
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(angle: float) -> np.ndarray:  # [3, 3]
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[F, 3] unnormalised face normals (length = twice the triangle area)."""
    tri = vertices[faces]  # [F, 3, 3]
    return np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[V, 3] unit area-weighted vertex normals."""
    fn = face_normals(vertices, faces)  # [F, 3]
    vn = np.zeros_like(vertices)
    for corner in range(3):
        np.add.at(vn, faces[:, corner], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def signed_volume(mesh: Mesh) -> float:
    tri = mesh.vertices[mesh.faces]  # [F, 3, 3]
    return float(np.einsum("fi,fi->f", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


# ----------------------------------------------------------------------------------------------
# Primitives
# ----------------------------------------------------------------------------------------------
_BOX_FACES = (  # (outward axis, sign): four corners CCW seen from outside
    ((0, 1), [(1, -1, -1), (1, 1, -1), (1, 1, 1), (1, -1, 1)]),
    ((0, -1), [(-1, 1, -1), (-1, -1, -1), (-1, -1, 1), (-1, 1, 1)]),
    ((1, 1), [(1, 1, -1), (-1, 1, -1), (-1, 1, 1), (1, 1, 1)]),
    ((1, -1), [(-1, -1, -1), (1, -1, -1), (1, -1, 1), (-1, -1, 1)]),
    ((2, 1), [(-1, -1, 1), (1, -1, 1), (1, 1, 1), (-1, 1, 1)]),
    ((2, -1), [(-1, 1, -1), (1, 1, -1), (1, -1, -1), (-1, -1, -1)]),
)


@lru_cache(maxsize=1)
def _unit_box() -> tuple:
    v = np.array([c for _, corners in _BOX_FACES for c in corners], np.float64) * 0.5  # [24, 3]
    quads = np.arange(24).reshape(6, 4)
    f = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])  # [12, 3]
    return v, f


def box(sx: float, sy: float, sz: float, center: Sequence[float] = (0.0, 0.0, 0.0)) -> Mesh:
    """Axis-aligned box of size (sx, sy, sz) centred at ``center``; 24 vertices, 12 faces."""
    v, f = _unit_box()
    return Mesh(v * np.array([sx, sy, sz]) + np.asarray(center, np.float64), f.copy())


def frustum(r_bottom: float, r_top: float, height: float, segments: int = 24,
            z0: float = 0.0) -> Mesh:
    """Closed truncated cone on the z axis from ``z0`` to ``z0 + height`` (cylinder when the
    radii are equal, cone when ``r_top`` is 0). The side is smooth; caps are flat."""
    n = int(segments)
    a = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    ring = np.stack([np.cos(a), np.sin(a), np.zeros(n)], 1)  # [n, 3]
    zb, zt = np.array([0, 0, z0]), np.array([0, 0, z0 + height])
    i, j = np.arange(n), (np.arange(n) + 1) % n
    verts = [ring * r_bottom + zb, ring * max(r_top, 0.0) + zt]  # side: bottom 0..n-1, top n..2n-1
    faces = [np.stack([i, j, j + n], 1), np.stack([i, j + n, i + n], 1)]
    base = 2 * n
    # bottom cap (normal -z): centre + separate ring, fan clockwise seen from above
    verts += [zb[None], ring * r_bottom + zb]
    faces.append(np.stack([np.full(n, base), base + 1 + j, base + 1 + i], 1))
    base += n + 1
    if r_top > 0:
        verts += [zt[None], ring * r_top + zt]
        faces.append(np.stack([np.full(n, base), base + 1 + i, base + 1 + j], 1))
    return Mesh(np.concatenate(verts), np.concatenate(faces).astype(np.int64))


@lru_cache(maxsize=4)
def _icosphere(level: int) -> tuple:
    t = (1.0 + 5.0 ** 0.5) / 2.0
    v = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t),
         (0, 1, -t), (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    f = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4),
         (11, 10, 2), (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8),
         (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    verts = np.array(v, np.float64)
    faces = np.array(f, np.int64)
    for _ in range(level):  # split every edge once (unique edges), four faces per face
        e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])  # [3F, 2]
        key = np.sort(e, 1)
        uniq, inv = np.unique(key[:, 0] * len(verts) + key[:, 1], return_inverse=True)
        mids = (verts[uniq // len(verts)] + verts[uniq % len(verts)]) / 2.0
        m = (inv + len(verts)).reshape(3, -1).T  # [F, 3] midpoints of edges 01, 12, 20
        a, b, c = faces.T
        faces = np.concatenate([np.stack([a, m[:, 0], m[:, 2]], 1), np.stack([b, m[:, 1], m[:, 0]], 1),
                                np.stack([c, m[:, 2], m[:, 1]], 1), m])
        verts = np.concatenate([verts, mids])
    verts /= np.linalg.norm(verts, axis=1, keepdims=True)
    return verts, faces


def ellipsoid(rx: float, ry: float, rz: float, center: Sequence[float] = (0.0, 0.0, 0.0),
              level: int = 2) -> Mesh:
    """Icosphere (level 2: 320 faces) scaled to radii (rx, ry, rz)."""
    v, f = _icosphere(level)
    return Mesh(v * np.array([rx, ry, rz]) + np.asarray(center, np.float64), f.copy())


def sphere(r: float, center: Sequence[float] = (0.0, 0.0, 0.0), level: int = 2) -> Mesh:
    return ellipsoid(r, r, r, center, level)


def torus(R: float, r: float, n_major: int = 24, n_minor: int = 12) -> Mesh:
    """Torus around the z axis, centred at the origin (major radius R, tube radius r)."""
    a = np.linspace(0, 2 * np.pi, n_major, endpoint=False)[:, None]  # [M, 1]
    b = np.linspace(0, 2 * np.pi, n_minor, endpoint=False)[None, :]  # [1, m]
    rho = R + r * np.cos(b)
    v = np.stack(np.broadcast_arrays(rho * np.cos(a), rho * np.sin(a), r * np.sin(b) + 0 * a), -1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n_major), np.arange(n_minor), indexing="ij")
    i1, j1 = (i + 1) % n_major, (j + 1) % n_minor
    idx = lambda p, q: (p * n_minor + q).ravel()  # noqa: E731
    f = np.concatenate([np.stack([idx(i, j), idx(i1, j), idx(i1, j1)], 1),
                        np.stack([idx(i, j), idx(i1, j1), idx(i, j1)], 1)])
    return Mesh(v, f.astype(np.int64))


def quad(corners: np.ndarray) -> Mesh:
    """One planar quad from 4 corners [4, 3] given CCW seen from the side it faces."""
    return Mesh(np.asarray(corners, np.float64), np.array([[0, 1, 2], [0, 2, 3]], np.int64))


def wavy_sheet(width: float, height: float, amplitude: float, waves: int, segments: int = 48) -> Mesh:
    """A vertical curtain-like sheet in the xz plane (y = amplitude * sin), facing -y, two-sided
    by duplication so both sides have outward winding."""
    x = np.linspace(-width / 2, width / 2, segments + 1)
    y = amplitude * np.sin(2 * np.pi * waves * (x - x[0]) / width)
    z = np.array([0.0, height])
    v = np.stack(np.broadcast_arrays(x[:, None], y[:, None], z[None, :]), -1).reshape(-1, 3)  # [(S+1)*2, 3]
    k = np.arange(segments)
    a, b, c, d = 2 * k, 2 * k + 2, 2 * k + 3, 2 * k + 1  # bottom-left, bottom-right, top-right, top-left
    front = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    back = front[:, ::-1] + len(v)
    return Mesh(np.concatenate([v, v]), np.concatenate([front, back]).astype(np.int64))
