"""Pinhole intrinsics, per-pixel rays and a handheld-scan-like camera path inside a room.

Convention: camera-to-world matrices in OpenCV axes (x right, y down, z forward), world z up.
Pixel convention of the PanopLi/Messy formats: the ray through pixel (u, v) (integer column,
row) has camera-frame direction ((u - cx) / fx, (v - cy) / fy, 1), no half-pixel offset. With
that direction (z component 1) the ray parameter t of a hit IS its z-depth.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .layout import Layout, point_box_distance


class CameraPathError(RuntimeError):
    """No collision-free camera path was found in the layout."""


def intrinsics(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """[3, 3] K with square pixels, horizontal field of view ``hfov_deg`` and the principal point
    at the image centre ((W - 1) / 2, (H - 1) / 2) in the no-offset pixel convention."""
    if width < 2 or height < 2:
        raise ValueError(f"image size must be at least 2x2, got {width}x{height}")
    f = (width / 2.0) / np.tan(np.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def camera_rays(K: np.ndarray, c2w: np.ndarray, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    """World-space rays of every pixel, row-major. -> origins [H*W, 3], dirs [H*W, 3] (not unit:
    camera-frame z component 1, so the hit parameter t is the z-depth)."""
    x = ((np.arange(width) - K[0, 2]) / K[0, 0])[None, :, None]  # [1, W, 1]
    y = ((np.arange(height) - K[1, 2]) / K[1, 1])[:, None, None]  # [H, 1, 1]
    R = c2w[:3, :3]
    dirs = (x * R[:, 0] + y * R[:, 1] + R[:, 2]).reshape(-1, 3)  # [H*W, 3] = R @ (x, y, 1)
    return np.broadcast_to(c2w[:3, 3], dirs.shape), dirs


def project(points: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """World points [P, 3] -> pixel coordinates [P, 2] (same no-offset convention) and z-depth [P]."""
    w2c = np.linalg.inv(c2w)
    pc = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[:, 2]
    uv = np.stack([K[0, 0] * pc[:, 0] / z + K[0, 2], K[1, 1] * pc[:, 1] / z + K[1, 2]], 1)
    return uv, z


def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """[4, 4] OpenCV camera-to-world looking from ``eye`` at ``target`` with world +z up, then
    rolled by ``roll`` radians about the viewing axis."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    if np.linalg.norm(x) < 1e-6:
        raise ValueError("look_at: viewing direction is vertical")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = np.cos(roll), np.sin(roll)
    x, y = c * x + s * y, -s * x + c * y
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return c2w


def _catmull_rom_closed(points: np.ndarray, samples_per_segment: int) -> np.ndarray:
    """Closed uniform Catmull-Rom spline through points [K, D] -> [K * S, D]."""
    k = len(points)
    t = np.linspace(0, 1, samples_per_segment, endpoint=False)[:, None]  # [S, 1]
    out = []
    for i in range(k):
        p0, p1, p2, p3 = points[(i - 1) % k], points[i], points[(i + 1) % k], points[(i + 2) % k]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    return np.concatenate(out)


def _smooth_noise(rng: np.random.Generator, n: int, amplitude: float,
                  cycles: Tuple[float, float] = (1.5, 9.0)) -> np.ndarray:
    """Sum of three random sinusoids over a closed path of n samples, peak about ``amplitude``."""
    s = np.arange(n) / n
    out = np.zeros(n)
    for _ in range(3):
        f = rng.uniform(*cycles)
        out += np.sin(2 * np.pi * (f * s + rng.uniform()))
    return out * amplitude / 2.0


def free_space(layout: Layout, points: np.ndarray, wall_margin: float, clearance: float) -> np.ndarray:
    """[P] bool: points [P, 3] inside the room by ``wall_margin`` and ``clearance`` away from every
    occupied box."""
    L, W, H = layout.size
    inside = ((points[:, 0] > wall_margin) & (points[:, 0] < L - wall_margin) & (points[:, 1] > wall_margin)
              & (points[:, 1] < W - wall_margin) & (points[:, 2] > .3) & (points[:, 2] < H - .3))
    if len(layout.blockers) == 0:
        return inside
    return inside & (point_box_distance(points, layout.blockers).min(1) > clearance)


def handheld_path(layout: Layout, num_views: int, rng: np.random.Generator,
                  heights: Tuple[float, float] = (1.2, 1.8), wall_margin: float = .5,
                  clearance: float = .45, tries: int = 60) -> np.ndarray:
    """[C, 4, 4] OpenCV camera-to-world matrices along a smooth closed loop through random free
    waypoints (heights in ``heights``), each looking at a smoothly changing point of interest
    (things and furniture) with handheld yaw/pitch/roll jitter."""
    L, W, H = layout.size
    interest, weight = layout.interest_points()  # [P, 3], [P]
    if len(interest) == 0:
        interest, weight = np.array([[L / 2, W / 2, .7]]), np.ones(1)
    n_way = int(np.clip(num_views // 8, 6, 10 + int(max(L, W) / 1.5)))
    centre = np.array([L / 2, W / 2])
    way_margin = wall_margin + .35  # waypoints keep off the walls so the spline's overshoot stays inside
    for _ in range(tries):
        cand = np.stack([rng.uniform(way_margin, L - way_margin, 3000), rng.uniform(way_margin, W - way_margin, 3000),
                         rng.uniform(heights[0], heights[1], 3000)], 1)
        cand = cand[free_space(layout, cand, way_margin, clearance + .15)]
        if len(cand) < n_way:
            continue
        # farthest-point sampling in the floor plane for coverage, then order around the centre
        pick = [int(rng.integers(len(cand)))]
        dist = np.linalg.norm(cand[:, :2] - cand[pick[0], :2], axis=1)
        for _ in range(n_way - 1):
            pick.append(int(dist.argmax()))
            dist = np.minimum(dist, np.linalg.norm(cand[:, :2] - cand[pick[-1], :2], axis=1))
        way = cand[pick]
        ang = np.arctan2((way[:, 1] - W / 2) / W, (way[:, 0] - L / 2) / L)
        way = way[np.argsort(ang)]
        for _ in range(8):  # pull the waypoints next to a colliding stretch towards the centre
            dense = _catmull_rom_closed(way, 64)  # [K*64, 3]
            bad = ~free_space(layout, dense, wall_margin, clearance)
            if not bad.any():
                break
            seg = np.unique(np.nonzero(bad)[0] // 64)
            for k in np.unique(np.concatenate([seg, (seg + 1) % n_way])):
                way[k, :2] += .3 * (centre - way[k, :2])
        else:
            continue
        # equal arc-length spacing along the loop
        seg = np.linalg.norm(np.diff(np.concatenate([dense, dense[:1]]), axis=0), axis=1)
        arc = np.concatenate([[0], np.cumsum(seg)])
        s = np.linspace(0, arc[-1], num_views, endpoint=False)
        idx = np.clip(np.searchsorted(arc, s, side="right") - 1, 0, len(dense) - 1)
        eye = dense[idx] + np.stack([_smooth_noise(rng, num_views, .015, (8, 30)) for _ in range(3)], 1)
        # one point of interest per waypoint at a comfortable distance, splined like the path
        tgt = []
        for w in way:
            d = np.linalg.norm(interest - w, axis=1)
            ok = np.nonzero((d > 1.0) & (d < 4.5))[0]
            tgt.append(interest[rng.choice(ok, p=weight[ok] / weight[ok].sum())] if len(ok)
                       else np.array([L / 2, W / 2, .6]))
        target = _catmull_rom_closed(np.array(tgt), 64)[idx]
        cams = []
        yaw_j = _smooth_noise(rng, num_views, np.radians(6))
        pitch_j = _smooth_noise(rng, num_views, np.radians(4))
        roll_j = _smooth_noise(rng, num_views, np.radians(2.5))
        for i in range(num_views):
            d = target[i] - eye[i]
            dist = np.linalg.norm(d[:2])
            yaw = np.arctan2(d[1], d[0]) + yaw_j[i]
            pitch = np.clip(np.arctan2(d[2], max(dist, 1e-6)) + pitch_j[i], np.radians(-65), np.radians(10))
            fwd = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
            cams.append(look_at(eye[i], eye[i] + fwd, roll_j[i]))
        c2w = np.stack(cams)
        if free_space(layout, c2w[:, :3, 3], wall_margin * .9, clearance * .9).all():
            return c2w
    raise CameraPathError(f"no collision-free camera path found in layout {layout.name!r}")
