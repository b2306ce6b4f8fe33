"""Procedural materials: solid (3D) textures evaluated at surface points, so a surface point has
the same colour in every view (what photometric 3DGS needs), plus the palettes per class.

Convention: colours are linear RGB in [0, 1]; :func:`shading.to_srgb8` converts at the end.
A texture is a pure function of the world position of the point and the material record, so
textures are exactly view-consistent and deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

PLAIN, CHECKER, STRIPES, WOOD, MARBLE, DOTS, TILES, PLANKS = range(8)
PATTERN_NAMES = ("plain", "checker", "stripes", "wood", "marble", "dots", "tiles", "planks")


@dataclass(frozen=True)
class Material:
    base: Tuple[float, float, float]  # linear RGB
    second: Tuple[float, float, float]  # linear RGB of the pattern's second colour
    pattern: int  # one of PLAIN..PLANKS
    scale: float  # pattern period in metres
    axis: Tuple[float, float, float]  # unit vector: stripe normal / wood axis / plank direction
    seed: int  # noise seed
    noise: float = 0.12  # amplitude of the multiplicative value-noise grain


def srgb_to_linear(c: Sequence[float]) -> np.ndarray:
    return np.asarray(c, np.float64) ** 2.2


def hex_rgb(h: str) -> np.ndarray:  # "#rrggbb" -> linear RGB
    return srgb_to_linear([int(h[i:i + 2], 16) / 255.0 for i in (1, 3, 5)])


# ----------------------------------------------------------------------------------------------
# Palettes: (base, second, pattern, scale range). Objects of one class draw from a short list,
# so some same-class objects share a look (the segmenter cannot rely on colour alone).
# ----------------------------------------------------------------------------------------------
PaletteEntry = Tuple[str, str, int, Tuple[float, float]]
PALETTES: Dict[str, List[PaletteEntry]] = {
    "wall": [("#d9d2c5", "#cfc6b6", MARBLE, (0.8, 1.6)), ("#c9d4d8", "#b9c6cc", STRIPES, (0.15, 0.3)),
             ("#e3dccb", "#d2c7b0", PLAIN, (0.5, 1.0)), ("#d6c8c0", "#c4b2a8", DOTS, (0.18, 0.3))],
    "floor": [("#9a6b43", "#7a4f2e", PLANKS, (0.14, 0.2)), ("#b8b1a4", "#6e6a63", TILES, (0.3, 0.5)),
              ("#8c7a66", "#6b5a48", PLANKS, (0.1, 0.16)), ("#a9a39a", "#57534d", TILES, (0.45, 0.6))],
    "ceiling": [("#eeeeea", "#e2e2dc", PLAIN, (0.6, 1.2))],
    "wood": [("#a47148", "#7b4f2c", WOOD, (0.02, 0.04)), ("#c49a6c", "#9c7148", WOOD, (0.02, 0.05)),
             ("#5e3d26", "#452b19", WOOD, (0.02, 0.04))],
    "painted": [("#e8e6e1", "#d8d5cd", PLAIN, (0.3, 0.6)), ("#3d4a57", "#2e3842", PLAIN, (0.3, 0.6)),
                ("#7d8a6e", "#6c785e", PLAIN, (0.3, 0.6))],
    "stone": [("#d7d4ce", "#8f8a84", MARBLE, (0.1, 0.25)), ("#3b3b3d", "#6a6a70", MARBLE, (0.1, 0.25))],
    "metal": [("#b9bcc0", "#9fa3a8", STRIPES, (0.01, 0.02)), ("#3a3a3c", "#2a2a2c", PLAIN, (0.2, 0.4))],
    "fabric": [("#7a3b3b", "#5e2a2a", CHECKER, (0.04, 0.07)), ("#35547a", "#29405e", STRIPES, (0.03, 0.06)),
               ("#6f7a4a", "#59633a", DOTS, (0.04, 0.07)), ("#8a8580", "#6f6b66", PLAIN, (0.2, 0.4)),
               ("#b08a5a", "#8c6a40", CHECKER, (0.05, 0.09))],
    "ceramic": [("#f2f2ef", "#dcdcd6", PLAIN, (0.2, 0.4))],
    "glass": [("#a9c7dc", "#cfe2ee", STRIPES, (0.3, 0.5))],
    "screen": [("#101418", "#1b2530", MARBLE, (0.2, 0.4))],
    "skin": [("#c89b7b", "#b5866a", PLAIN, (0.2, 0.4)), ("#8d5a3b", "#7a4c31", PLAIN, (0.2, 0.4))],
    "art": [("#c0392b", "#f1c40f", MARBLE, (0.05, 0.12)), ("#2e86c1", "#f4f6f7", DOTS, (0.04, 0.08)),
            ("#27ae60", "#145a32", STRIPES, (0.03, 0.08)), ("#8e44ad", "#f5b041", CHECKER, (0.05, 0.1))],
    # small things of class "bag": a few shared looks plus bright toy-like ones
    "thing": [("#c0392b", "#922b21", PLAIN, (0.1, 0.2)), ("#2874a6", "#1b4f72", STRIPES, (0.02, 0.05)),
              ("#d4ac0d", "#9a7d0a", DOTS, (0.025, 0.05)), ("#239b56", "#196f3d", CHECKER, (0.03, 0.06)),
              ("#7d3c98", "#5b2c6f", MARBLE, (0.05, 0.1)), ("#dc7633", "#a04000", STRIPES, (0.02, 0.04)),
              ("#5d6d7e", "#34495e", CHECKER, (0.02, 0.05)), ("#f0e6d2", "#c8b99c", PLAIN, (0.1, 0.2)),
              ("#17a589", "#117864", DOTS, (0.02, 0.04)), ("#922b3e", "#f5cba7", STRIPES, (0.015, 0.03)),
              ("#2c3e50", "#85929e", MARBLE, (0.04, 0.08)), ("#a9cce3", "#2471a3", CHECKER, (0.02, 0.04))],
}


def make_material(rng: np.random.Generator, palette: str, jitter: float = 0.06,
                  entry: int = None) -> Material:
    """A material drawn from ``PALETTES[palette]`` with a small colour jitter."""
    options = PALETTES[palette]
    base_hex, second_hex, pattern, (s0, s1) = options[rng.integers(len(options)) if entry is None else entry]
    gain = 1.0 + jitter * rng.uniform(-1, 1, 3)
    axis = rng.normal(size=3)
    if pattern in (WOOD, PLANKS):  # wood grain / planks run horizontally
        axis[2] = 0.0
    return Material(
        base=tuple(np.clip(hex_rgb(base_hex) * gain, 0, 1)),
        second=tuple(np.clip(hex_rgb(second_hex) * gain, 0, 1)),
        pattern=int(pattern),
        scale=float(rng.uniform(s0, s1)),
        axis=tuple(axis / max(np.linalg.norm(axis), 1e-9)),
        seed=int(rng.integers(1, 2 ** 31 - 1)),
    )


# ----------------------------------------------------------------------------------------------
# Value noise
# ----------------------------------------------------------------------------------------------
_M1, _M2, _M3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _hash01(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Deterministic hash of integer lattice points -> float32 in [0, 1) (splitmix64 finaliser)."""
    with np.errstate(over="ignore"):
        h = (ix.astype(np.uint64) * np.uint64(73856093)) ^ (iy.astype(np.uint64) * np.uint64(19349663)) \
            ^ (iz.astype(np.uint64) * np.uint64(83492791)) ^ (seed.astype(np.uint64) * _M1)
        h ^= h >> np.uint64(30)
        h *= _M2
        h ^= h >> np.uint64(27)
        h *= _M3
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / (1 << 24))


_TABLE_BITS = 6  # a periodic 64^3 lattice of random values; per-seed offsets hide the period
_TABLE = np.random.default_rng(20240607).random(1 << (3 * _TABLE_BITS)).astype(np.float32)
_GOLDEN = np.array([0.6180339887, 0.4142135624, 0.7320508076])


def value_noise(p: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Trilinear value noise with smoothstep fade. p: [P, 3] (lattice units), seed: [P] -> [P] in [0, 1).

    Lattice values come from a fixed periodic table (period 64 lattice units), shifted by a
    seed-dependent offset, which is about twice as fast as hashing every corner."""
    n = 1 << _TABLE_BITS
    mask = n - 1
    off = ((np.asarray(seed, np.float64)[:, None] * _GOLDEN) % 1.0) * n  # [P, 3]
    p = (np.asarray(p, np.float64) + off)
    f = np.floor(p)
    i = f.astype(np.int64)
    t = (p - f).astype(np.float32)
    t = t * t * (3 - 2 * t)  # [P, 3]
    x0, y0, z0 = i[:, 0] & mask, (i[:, 1] & mask) << _TABLE_BITS, (i[:, 2] & mask) << (2 * _TABLE_BITS)
    x1 = (i[:, 0] + 1) & mask
    y1 = ((i[:, 1] + 1) & mask) << _TABLE_BITS
    z1 = ((i[:, 2] + 1) & mask) << (2 * _TABLE_BITS)
    tx, ty, tz = t[:, 0], t[:, 1], t[:, 2]
    T = _TABLE
    c00 = T[x0 + y0 + z0] + (T[x1 + y0 + z0] - T[x0 + y0 + z0]) * tx
    c10 = T[x0 + y1 + z0] + (T[x1 + y1 + z0] - T[x0 + y1 + z0]) * tx
    c01 = T[x0 + y0 + z1] + (T[x1 + y0 + z1] - T[x0 + y0 + z1]) * tx
    c11 = T[x0 + y1 + z1] + (T[x1 + y1 + z1] - T[x0 + y1 + z1]) * tx
    return (c00 + (c10 - c00) * ty) + ((c01 + (c11 - c01) * ty) - (c00 + (c10 - c00) * ty)) * tz


def fbm(p: np.ndarray, seed: np.ndarray, octaves: int = 3) -> np.ndarray:
    """Fractal sum of value noise, normalised to [0, 1). p: [P, 3], seed: [P] -> [P]."""
    total, amp, norm = np.zeros(len(p), np.float32), 1.0, 0.0
    for o in range(octaves):
        total += amp * value_noise(p * (2.0 ** o), seed + o)
        norm += amp
        amp *= 0.5
    return total / norm


# ----------------------------------------------------------------------------------------------
# Textures
# ----------------------------------------------------------------------------------------------
class MaterialTable:
    """The scene's materials as arrays, indexed by material id (one row per material)."""

    def __init__(self, materials: Sequence[Material], detail: float = 0.0):
        """``detail``: amplitude of an extra fine multiplicative speckle (about 1.5 cm features) on
        every material, 0 = none (the default look). Photo-like detail for structure-from-motion
        tests: SIFT finds few stable features on the smooth default textures at low resolution."""
        if not materials:
            raise ValueError("MaterialTable needs at least one material")
        self.base = np.array([m.base for m in materials], np.float32)  # [M, 3]
        self.second = np.array([m.second for m in materials], np.float32)  # [M, 3]
        self.pattern = np.array([m.pattern for m in materials], np.int64)  # [M]
        self.scale = np.array([m.scale for m in materials], np.float32)  # [M]
        self.axis = np.array([m.axis for m in materials], np.float32)  # [M, 3]
        self.seed = np.array([m.seed for m in materials], np.int64)  # [M]
        self.noise = np.array([m.noise for m in materials], np.float32)  # [M]
        self.detail = float(detail)

    def __len__(self) -> int:
        return len(self.base)

    def albedo(self, points: np.ndarray, material: np.ndarray) -> np.ndarray:
        """Linear albedo at surface points.

        points: [P, 3] world positions (metres); material: [P] material ids -> [P, 3] in [0, 1].
        """
        points = np.asarray(points, np.float32)
        material = np.asarray(material, np.int64)
        scale = self.scale[material][:, None]  # [P, 1]
        axis = self.axis[material]  # [P, 3]
        seed = self.seed[material]  # [P]
        q = points / scale  # [P, 3] pattern-lattice coordinates
        mix = np.zeros(len(points), np.float32)  # 0 -> base, 1 -> second
        pattern = self.pattern[material]
        for kind in np.unique(pattern):
            sel = np.nonzero(pattern == kind)[0]
            mix[sel] = _pattern_mix(int(kind), q[sel], axis[sel], seed[sel])
        base, second = self.base[material], self.second[material]
        color = base + (second - base) * mix[:, None]  # [P, 3]
        grain = fbm(points * np.float32(18.0), seed + 7, octaves=2)  # fine grain, ~5 cm features
        color *= (1.0 + self.noise[material] * (grain - 0.5) * 2.0)[:, None]
        if self.detail > 0:
            speck = fbm(points * np.float32(70.0), seed + 11, octaves=2)  # ~1.5 cm features
            color *= (1.0 + self.detail * (speck - 0.5) * 2.0)[:, None]
        return np.clip(color, 0.0, 1.0)


def _smooth_step(x: np.ndarray, w: float = 0.15) -> np.ndarray:
    return np.clip((x + w) / (2 * w), 0.0, 1.0)


def _pattern_mix(kind: int, q: np.ndarray, axis: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Blend weight of the second colour for one pattern. q: [P, 3] = position / scale."""
    if kind == PLAIN:
        return 0.5 * fbm(q, seed)
    if kind == CHECKER:
        parity = (np.floor(q).astype(np.int64).sum(1) & 1).astype(np.float32)
        return 0.85 * parity + 0.15 * fbm(q * 2, seed)
    if kind == STRIPES:
        s = np.sin(2 * np.pi * (q * axis).sum(1))
        return _smooth_step(s.astype(np.float32), 0.2)
    if kind == WOOD:  # rings around the (horizontal) axis, perturbed by noise
        along = (q * axis).sum(1, keepdims=True)
        radial = np.linalg.norm(q - along * axis, axis=1) * 0.35
        rings = radial + 1.5 * fbm(q * 0.15, seed)
        return (np.abs(np.sin(np.pi * rings)) ** 3).astype(np.float32)
    if kind == MARBLE:
        s = np.sin(2 * np.pi * ((q * axis).sum(1) * 0.5 + 2.5 * fbm(q * 0.5, seed, octaves=4)))
        return (0.5 + 0.5 * s).astype(np.float32)
    if kind == DOTS:
        d = np.linalg.norm(q - np.round(q), axis=1)
        return _smooth_step((0.3 - d).astype(np.float32), 0.04)
    if kind == TILES:  # grout lines on the horizontal plane, per-tile tone
        frac = q[:, :2] - np.floor(q[:, :2])
        edge = np.minimum(frac, 1 - frac).min(1)
        cell = np.floor(q).astype(np.int64)
        tone = 0.25 * _hash01(cell[:, 0], cell[:, 1], cell[:, 2] * 0, seed)
        return np.where(edge < 0.03, 1.0, tone).astype(np.float32)
    if kind == PLANKS:  # boards along ``axis`` in the horizontal plane, staggered ends
        ax = axis[:, :2] / np.maximum(np.linalg.norm(axis[:, :2], axis=1, keepdims=True), 1e-6)
        u = (q[:, :2] * ax).sum(1)  # along the board
        v = q[:, 0] * -ax[:, 1] + q[:, 1] * ax[:, 0]  # across
        row = np.floor(v).astype(np.int64)
        u_board = u / 8.0 + _hash01(row, row * 0, row * 0, seed)  # boards 8 widths long
        col = np.floor(u_board).astype(np.int64)
        tone = 0.6 * _hash01(row, col, row * 0 + 1, seed)
        gap = (np.minimum(v - row, 1 - (v - row)) < 0.03) | (np.minimum(u_board - col, 1 - (u_board - col)) < 0.004)
        grain = 0.3 * fbm(np.stack([u * 0.5, v * 6.0, q[:, 2]], 1), seed + 3)
        return np.where(gap, 1.0, tone + grain).astype(np.float32)
    raise ValueError(f"unknown texture pattern {kind}")
