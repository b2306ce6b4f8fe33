"""Deterministic view rendering: ray-cast ids and depth, shade with procedural textures,
Lambertian point lights (with hard shadows) and a hemispherical ambient term.

Convention: the output colour is sRGB uint8 (gamma 2.2 applied to linear radiance clipped to
[0, 1]); depth is the z-depth in metres (0 where a ray hits nothing); instance 0 = stuff;
semantic 0 = void (only for rays that hit nothing). Shading depends only on the surface point,
never on the viewing direction, so every view of a point has the same colour.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

from .cameras import camera_rays
from .layout import Layout, SceneMesh
from .materials import MaterialTable
from .meshes import face_normals
from .raycast import make_caster


@dataclass
class View:
    rgb: np.ndarray  # [H, W, 3] uint8 sRGB
    depth: np.ndarray  # [H, W] float32 metres (z-depth), 0 = no hit
    instance: np.ndarray  # [H, W] int32 GT instance id (0 = stuff)
    semantic: np.ndarray  # [H, W] uint8 GT class (0 = void)


class SceneRenderer:
    def __init__(self, layout: Layout, backend: str = "auto", threads: int = 2, shadows: bool = True,
                 ambient: Tuple[float, float] = (.22, .2), texture_detail: float = 0.0):
        self.layout = layout
        self.mesh: SceneMesh = layout.assemble()
        self.materials = MaterialTable(layout.materials, texture_detail)
        self.caster = make_caster(self.mesh.vertices, self.mesh.faces, backend, threads)
        fn = face_normals(self.mesh.vertices, self.mesh.faces)
        fn = fn / np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-20)
        self.face_normals = fn.astype(np.float32)  # [F, 3] unit
        self.shadows = shadows
        self.ambient = ambient  # (base, extra for upward normals)

    @property
    def backend(self) -> str:
        return type(self.caster).__name__

    def shade(self, points: np.ndarray, normals: np.ndarray, geo_normals: np.ndarray,
              material: np.ndarray) -> np.ndarray:
        """Linear radiance of surface points. points, normals (unit, shading), geo_normals (unit,
        facing the viewer side): [P, 3]; material: [P] -> [P, 3]."""
        albedo = self.materials.albedo(points, material)  # [P, 3]
        light = self.ambient[0] + self.ambient[1] * (0.5 + 0.5 * normals[:, 2])  # [P]
        origin = points + geo_normals * 2e-3  # shadow-ray origins just off the surface
        for pos, power in zip(self.layout.lights, self.layout.light_power):
            to_l = (pos - points).astype(np.float32)  # [P, 3]
            dist = np.linalg.norm(to_l, axis=1)
            ldir = to_l / np.maximum(dist, 1e-6)[:, None]
            ndl = np.clip((normals * ldir).sum(1), 0, None) * ((geo_normals * ldir).sum(1) > 0)
            lit = ndl > 0
            if self.shadows and lit.any():
                idx = np.nonzero(lit)[0]
                blocked = self.caster.occluded(origin[idx], to_l[idx], np.full(len(idx), 0.999, np.float32))
                lit[idx[blocked]] = False
            light = light + power * ndl * lit / (1.0 + (dist / 3.0) ** 2)
        return albedo * light[:, None]

    def render(self, K: np.ndarray, c2w: np.ndarray, width: int, height: int) -> View:
        origins, dirs = camera_rays(K, c2w, width, height)  # [R, 3] each
        hits = self.caster.intersect(origins, dirs)
        ok = hits.tri >= 0
        tri = hits.tri[ok]
        t = hits.t[ok]
        P = (origins[ok] + dirs[ok] * t[:, None]).astype(np.float32)  # [h, 3]
        ng = self.face_normals[tri]  # [h, 3]
        facing = np.where((ng * dirs[ok]).sum(1) > 0, -1.0, 1.0).astype(np.float32)[:, None]
        ng = ng * facing  # towards the camera (two-sided surfaces)
        f = self.mesh.faces[tri]  # [h, 3]
        u, v = hits.u[ok][:, None], hits.v[ok][:, None]
        n = (1 - u - v) * self.mesh.normals[f[:, 0]] + u * self.mesh.normals[f[:, 1]] + v * self.mesh.normals[f[:, 2]]
        n = n * facing
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        radiance = self.shade(P, n, ng, self.mesh.tri_material[tri])
        R = width * height
        rgb = np.zeros((R, 3), np.float32)
        rgb[ok] = radiance
        depth = np.zeros(R, np.float32)
        depth[ok] = t
        inst = np.zeros(R, np.int32)
        inst[ok] = self.mesh.tri_instance[tri]
        sem = np.zeros(R, np.uint8)
        sem[ok] = self.mesh.tri_class[tri]
        return View(to_srgb8(rgb).reshape(height, width, 3), depth.reshape(height, width),
                    inst.reshape(height, width), sem.reshape(height, width))

    def sample_surface(self, n: int, rng: np.random.Generator, noise: float = 0.0,
                       exclude_ceiling: bool = False) -> Dict[str, np.ndarray]:
        """Area-weighted samples on all surfaces, shaded like the views.
        -> points [n, 3] float32 (plus Gaussian noise of std ``noise`` metres), colors [n, 3]
        float32 in [0, 1] (sRGB), normals [n, 3], instance [n], semantic [n]."""
        fn = face_normals(self.mesh.vertices, self.mesh.faces)
        area = np.linalg.norm(fn, axis=1)
        if exclude_ceiling:
            area = area * (self.mesh.tri_class != 13)
        tri = rng.choice(len(area), n, p=area / area.sum())
        r1, r2 = rng.random(n), rng.random(n)
        swap = r1 + r2 > 1
        r1[swap], r2[swap] = 1 - r1[swap], 1 - r2[swap]
        f = self.mesh.faces[tri]
        V = self.mesh.vertices
        P = (1 - r1 - r2)[:, None] * V[f[:, 0]] + r1[:, None] * V[f[:, 1]] + r2[:, None] * V[f[:, 2]]
        nrm = ((1 - r1 - r2)[:, None] * self.mesh.normals[f[:, 0]] + r1[:, None] * self.mesh.normals[f[:, 1]]
               + r2[:, None] * self.mesh.normals[f[:, 2]])
        nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
        rad = self.shade(P.astype(np.float32), nrm.astype(np.float32), self.face_normals[tri],
                         self.mesh.tri_material[tri])
        colors = to_srgb8(rad).astype(np.float32) / 255.0
        if noise > 0:
            P = P + rng.normal(0, noise, P.shape)
        return {"points": P.astype(np.float32), "colors": colors, "normals": nrm.astype(np.float32),
                "instance": self.mesh.tri_instance[tri], "semantic": self.mesh.tri_class[tri]}


def to_srgb8(linear: np.ndarray) -> np.ndarray:
    """Linear radiance [..., 3] -> sRGB uint8 (clip to [0, 1], gamma 1/2.2)."""
    return np.round(np.clip(linear, 0.0, 1.0) ** (1 / 2.2) * 255.0).astype(np.uint8)
