"""First-hit ray casting against a triangle soup: Embree (``embreex``) fast path and a pure-PyTorch
twin with the same signature (used when embreex is missing, and by the tests to check the fast
path).

Convention: a hit is reported as (t, tri, u, v) where the hit point is ``o + t * d`` (``d`` is
NOT normalised, so t is in units of |d|), ``tri`` is the triangle index (-1 = miss, then t is
inf) and (u, v) are the barycentric weights of the triangle's 2nd and 3rd vertex.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np


class Hits(NamedTuple):
    t: np.ndarray  # [R] float32, inf = miss
    tri: np.ndarray  # [R] int64, -1 = miss
    u: np.ndarray  # [R] float32
    v: np.ndarray  # [R] float32


def embree_available() -> bool:
    try:
        import embreex.rtcore_scene  # noqa: F401
    except ImportError:
        return False
    return True


class EmbreeCaster:
    """Embree BVH over the triangles; casts chunks of rays on ``threads`` threads (the wheel
    releases the GIL, so 2 threads give ~2x on 2 cores)."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, threads: int = 2):
        try:
            from embreex import mesh_construction, rtcore_scene
        except ImportError as e:  # the caller picks TorchCaster instead; say how to get the fast path
            raise ImportError("EmbreeCaster needs the 'embreex' wheel: pip install embreex") from e
        self.scene = rtcore_scene.EmbreeScene()
        self._mesh = mesh_construction.TriangleMesh(self.scene, np.ascontiguousarray(vertices, np.float32),
                                                    np.ascontiguousarray(faces, np.int32))
        self.threads = max(1, int(threads))
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def _chunks(self, n: int):
        k = self.threads if n >= 4096 * self.threads else 1
        bounds = np.linspace(0, n, k + 1).astype(int)
        return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

    def _map(self, fn, n):
        chunks = self._chunks(n)
        if self._pool is None or len(chunks) == 1:
            return [fn(c) for c in chunks]
        return list(self._pool.map(fn, chunks))

    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> Hits:
        """origins, dirs: [R, 3] -> first hits."""
        o = np.ascontiguousarray(origins, np.float32)
        d = np.ascontiguousarray(dirs, np.float32)
        parts = self._map(lambda s: self.scene.run(o[s], d[s], output=1), len(o))
        tri = np.concatenate([p["primID"] for p in parts]).astype(np.int64)
        t = np.concatenate([p["tfar"] for p in parts]).astype(np.float32)
        t[tri < 0] = np.inf
        return Hits(t, tri, np.concatenate([p["u"] for p in parts]), np.concatenate([p["v"] for p in parts]))

    def occluded(self, origins: np.ndarray, dirs: np.ndarray, tmax: np.ndarray) -> np.ndarray:
        """Whether anything is hit with 0 < t < tmax. origins, dirs: [R, 3]; tmax: [R] -> [R] bool."""
        o = np.ascontiguousarray(origins, np.float32)
        d = np.ascontiguousarray(dirs, np.float32)
        tm = np.ascontiguousarray(tmax, np.float32)
        parts = self._map(lambda s: self.scene.run(o[s], d[s], dists=tm[s], query="OCCLUDED"), len(o))
        return np.concatenate(parts) >= 0


class TorchCaster:
    """Brute-force Moller-Trumbore over all triangles in ray chunks (float64). O(R F): fine for
    test-sized scenes, slow for real ones."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, chunk_elems: int = 2 ** 22):
        import torch  # only this fallback needs torch (a slow import the Embree path avoids)
        self.torch = torch
        tri = torch.as_tensor(np.asarray(vertices, np.float64)[np.asarray(faces)])  # [F, 3, 3]
        self.v0 = tri[:, 0]
        self.e1 = tri[:, 1] - tri[:, 0]  # [F, 3]
        self.e2 = tri[:, 2] - tri[:, 0]
        self.chunk = max(1, chunk_elems // max(len(tri), 1))

    def _cast(self, o, d, tmax):
        # o, d: [r, 3] float64 tensors, tmax: [r] or None; broadcast against [F, 3] -> [r, F]
        torch = self.torch
        p = torch.cross(d[:, None, :].expand(-1, len(self.e2), -1), self.e2[None].expand(len(d), -1, -1), dim=-1)
        det = (self.e1[None] * p).sum(-1)  # [r, F]
        ok = det.abs() > 1e-14
        inv = torch.where(ok, 1.0 / torch.where(ok, det, torch.ones_like(det)), torch.zeros_like(det))
        s = o[:, None, :] - self.v0[None]  # [r, F, 3]
        u = (s * p).sum(-1) * inv
        q = torch.cross(s, self.e1[None].expand_as(s), dim=-1)
        v = (d[:, None, :] * q).sum(-1) * inv
        t = (self.e2[None] * q).sum(-1) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-9)
        if tmax is not None:
            hit &= t < tmax[:, None]
        t = torch.where(hit, t, torch.full_like(t, float("inf")))
        tbest, tri = t.min(1)  # [r]
        rows = torch.arange(len(d))
        return tbest, torch.where(torch.isfinite(tbest), tri, torch.full_like(tri, -1)), u[rows, tri], v[rows, tri]

    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> Hits:
        torch = self.torch
        o = torch.as_tensor(np.asarray(origins, np.float64))
        d = torch.as_tensor(np.asarray(dirs, np.float64))
        out = [self._cast(o[i:i + self.chunk], d[i:i + self.chunk], None) for i in range(0, len(o), self.chunk)]
        t, tri, u, v = (torch.cat(x) for x in zip(*out))
        return Hits(t.float().numpy(), tri.numpy(), u.float().numpy(), v.float().numpy())

    def occluded(self, origins: np.ndarray, dirs: np.ndarray, tmax: np.ndarray) -> np.ndarray:
        torch = self.torch
        o = torch.as_tensor(np.asarray(origins, np.float64))
        d = torch.as_tensor(np.asarray(dirs, np.float64))
        tm = torch.as_tensor(np.asarray(tmax, np.float64))
        out = [self._cast(o[i:i + self.chunk], d[i:i + self.chunk], tm[i:i + self.chunk])[1] >= 0
               for i in range(0, len(o), self.chunk)]
        return torch.cat(out).numpy()


def make_caster(vertices: np.ndarray, faces: np.ndarray, backend: str = "auto", threads: int = 2):
    """``backend``: "embree", "torch", or "auto" (Embree when the wheel is installed)."""
    if backend not in ("auto", "embree", "torch"):
        raise ValueError(f"unknown ray-cast backend {backend!r}; use auto, embree or torch")
    if backend == "embree" or (backend == "auto" and embree_available()):
        return EmbreeCaster(vertices, faces, threads)
    return TorchCaster(vertices, faces)
