"""Scene generation: layout -> camera path -> per-view render + simulated segmenter -> writers.

Everything random comes from ``numpy.random.default_rng([seed, stream, index])`` streams, so a
scene is a pure function of its config (views may be rendered in any order or in parallel).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from typing import Dict, Optional, Sequence

import numpy as np
from tqdm import tqdm

from .cameras import camera_rays, handheld_path, intrinsics
from .classes import CLASS_NAMES, THING_CLASSES
from .layout import build_layout
from .renderer import SceneRenderer
from .segmenter import NoiseConfig, noise_preset, simulate_segmenter
from .writers import ColmapWriter, MessyWriter, PanopliWriter

GENERATOR_VERSION = 1
_LAYOUT, _CAMERAS, _VIEW_NOISE, _POINTS = 1, 2, 3, 4  # rng streams


@dataclass
class SceneConfig:
    layout: str = "old_room"
    num_objects: int = 25
    num_views: int = 200
    width: int = 640
    height: int = 480
    seed: int = 0
    noise: str = "realistic"  # preset name
    noise_overrides: Dict[str, str] = field(default_factory=dict)
    hfov_deg: Optional[float] = None  # None: drawn in [60, 70]
    points: str = "surface"  # surface | depth | none
    num_points: int = 100_000
    point_noise: float = 0.005  # metres
    depth: bool = True
    probabilities: bool = False  # write m2f_probabilities/*.npz "probability" (H x W x 22 float16)
    jpeg_quality: int = 95
    shadows: bool = True
    test_every: int = 4  # PanopLi split: every test_every-th view (index % n == n - 1) is a test view
    backend: str = "auto"  # ray caster: auto | embree | torch
    threads: int = 2
    texture_detail: float = 0.0  # fine speckle amplitude on every material (0: the default look)

    def noise_config(self) -> NoiseConfig:
        return noise_preset(self.noise).with_overrides(self.noise_overrides)

    def validate(self) -> None:
        if self.points not in ("surface", "depth", "none"):
            raise ValueError(f"points must be surface, depth or none, got {self.points!r}")
        if self.num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {self.num_views}")
        if self.width < 8 or self.height < 8:
            raise ValueError(f"image size must be at least 8x8, got {self.width}x{self.height}")
        if not 0.0 <= self.texture_detail <= 1.0:
            raise ValueError(f"texture_detail must be in [0, 1], got {self.texture_detail}")
        if self.test_every < 2:
            raise ValueError(f"test_every must be >= 2, got {self.test_every}")
        self.noise_config()


def view_name(i: int) -> str:
    return f"{i:04d}"


def generate_scene(cfg: SceneConfig, out_dir: Optional[str] = None, messy_dir: Optional[str] = None,
                   progress: bool = True, workers: int = 2, colmap_dir: Optional[str] = None) -> dict:
    """Renders the scene of ``cfg`` and writes it as PanopLi into ``out_dir``, as Messy-Rooms into
    ``messy_dir`` and/or as a COLMAP capture with instance-only masks into ``colmap_dir``. Views are rendered by ``workers`` forked processes (1: in
    this process); the result does not depend on it. Returns the metadata also written to
    generator.json."""
    cfg.validate()
    if out_dir is None and messy_dir is None and colmap_dir is None:
        raise ValueError("generate_scene: give out_dir (PanopLi), messy_dir (Messy-Rooms) and/or colmap_dir")
    t0 = time.time()
    noise = cfg.noise_config()
    layout = build_layout(cfg.layout, cfg.num_objects, np.random.default_rng([cfg.seed, _LAYOUT]))
    cam_rng = np.random.default_rng([cfg.seed, _CAMERAS])
    hfov = cfg.hfov_deg if cfg.hfov_deg is not None else float(cam_rng.uniform(60, 70))
    K = intrinsics(cfg.width, cfg.height, hfov)
    c2w = handheld_path(layout, cfg.num_views, cam_rng)
    writers = []
    if out_dir is not None:
        writers.append(PanopliWriter(out_dir, cfg.jpeg_quality, cfg.depth, cfg.probabilities))
    if messy_dir is not None:
        writers.append(MessyWriter(messy_dir, cfg.depth))
    if colmap_dir is not None:
        writers.append(ColmapWriter(colmap_dir, cfg.jpeg_quality))
    names = [view_name(i) for i in range(cfg.num_views)]

    job = _Job(cfg, noise, layout, K, c2w, names, writers)
    chunks = [list(range(a, min(a + 4, cfg.num_views))) for a in range(0, cfg.num_views, 4)]
    bar = tqdm(total=cfg.num_views, desc=f"views ({os.path.basename(str(out_dir or messy_dir or colmap_dir))})",
               disable=not progress)
    results = []
    workers = max(1, min(int(workers), len(chunks)))
    if workers > 1 and "fork" in mp.get_all_start_methods():
        global _JOB
        _JOB = job  # inherited by the forked workers; each builds its own ray caster
        try:
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
                for fut in as_completed([pool.submit(_run_chunk, c, 1) for c in chunks]):
                    results.append(fut.result())
                    bar.update(len(results[-1]["views"]))
        finally:
            _JOB = None
    else:
        for c in chunks:
            results.append(job.run(c, cfg.threads))
            bar.update(len(c))
    bar.close()
    results.sort(key=lambda r: r["views"][0])
    totals: Dict[str, int] = {}
    timing = {"render": 0.0, "segmenter": 0.0, "write": 0.0}
    for r in results:
        for k, v in r["stats"].items():
            totals[k] = totals.get(k, 0) + v
        for k in timing:
            timing[k] += r["timing"][k]

    renderer = job.renderer(cfg.threads)
    points = _initial_points(cfg, renderer, [p for r in results for p in r["points"]])
    meta = {
        "generator": "unic-lift tools/synthetic", "version": GENERATOR_VERSION,
        "config": {k: v for k, v in vars(cfg).items()},
        "noise": noise.to_json(),
        "layout": layout.name, "room_size_m": [round(float(v), 4) for v in layout.size],
        "num_objects": layout.num_things, "num_views": cfg.num_views, "width": cfg.width, "height": cfg.height,
        "hfov_deg": hfov, "K": K.tolist(), "thing_scale": layout.thing_scale,
        "class_names": list(CLASS_NAMES), "thing_classes": list(THING_CLASSES),
        "convention": "pose = 4x4 camera-to-world, OpenCV axes, metres, world z up; the ray through pixel "
                      "(u, v) has camera direction ((u-cx)/fx, (v-cy)/fy, 1) (no half-pixel offset); "
                      "depth = z-depth in mm (uint16)",
        "lights": layout.lights.round(4).tolist(),
        "objects": [it.to_json() for it in layout.items],
        "noise_stats": totals,
        "backend": renderer.backend,
        "timing_s": {"total": round(time.time() - t0, 2), "workers": workers,
                     **{k: round(v, 2) for k, v in timing.items()}},
    }
    for w in writers:
        w.finish(K, names, c2w, cfg.test_every, points, meta)
    return meta


class _Job:
    """Everything a worker needs to render, perturb and write a list of views."""

    def __init__(self, cfg, noise, layout, K, c2w, names, writers):
        self.cfg, self.noise, self.layout, self.K, self.c2w = cfg, noise, layout, K, c2w
        self.names, self.writers = names, writers
        self._renderer = None

    def renderer(self, threads: int) -> SceneRenderer:
        if self._renderer is None:
            self._renderer = SceneRenderer(self.layout, self.cfg.backend, threads, self.cfg.shadows,
                                           texture_detail=self.cfg.texture_detail)
        return self._renderer

    def run(self, views: Sequence[int], threads: int) -> dict:
        cfg = self.cfg
        renderer = self.renderer(threads)
        stats: Dict[str, int] = {}
        timing = {"render": 0.0, "segmenter": 0.0, "write": 0.0}
        points = []
        for i in views:
            ta = time.time()
            view = renderer.render(self.K, self.c2w[i], cfg.width, cfg.height)
            tb = time.time()
            seg = simulate_segmenter(view.instance, view.semantic, view.depth, self.noise,
                                     np.random.default_rng([cfg.seed, _VIEW_NOISE, i]))
            tc = time.time()
            for w in self.writers:
                w.write_view(self.names[i], view.rgb, view.depth, view.instance, view.semantic, seg, self.c2w[i])
            for k, v in seg.stats.items():
                stats[k] = stats.get(k, 0) + v
            if cfg.points == "depth" and i % cfg.test_every != cfg.test_every - 1:
                points.append(_backproject(view, self.K, self.c2w[i], cfg, i))
            timing["render"] += tb - ta
            timing["segmenter"] += tc - tb
            timing["write"] += time.time() - tc
        return {"views": list(views), "stats": stats, "timing": timing, "points": points}


_JOB: Optional[_Job] = None


def _run_chunk(views: Sequence[int], threads: int) -> dict:
    return _JOB.run(views, threads)


def _backproject(view, K: np.ndarray, c2w: np.ndarray, cfg: SceneConfig, i: int) -> np.ndarray:
    """[P, 6] (xyz, rgb in [0, 1]) from a strided subset of one view's valid depth pixels."""
    n_train = cfg.num_views - cfg.num_views // cfg.test_every
    stride = max(1, int(np.sqrt(cfg.width * cfg.height * max(n_train, 1) / max(cfg.num_points, 1))))
    rng = np.random.default_rng([cfg.seed, _POINTS, i])
    oy, ox = rng.integers(stride), rng.integers(stride)
    o, d = camera_rays(K, c2w, cfg.width, cfg.height)
    sel = np.zeros((cfg.height, cfg.width), bool)
    sel[oy::stride, ox::stride] = True
    sel &= view.depth > 0
    flat = sel.ravel()
    P = o[flat] + d[flat] * view.depth.ravel()[flat, None]
    return np.concatenate([P, view.rgb.reshape(-1, 3)[flat] / 255.0], 1)


def _initial_points(cfg: SceneConfig, renderer: SceneRenderer, depth_points: Sequence[np.ndarray]):
    rng = np.random.default_rng([cfg.seed, _POINTS])
    if cfg.points == "none":
        return None
    if cfg.points == "surface":
        pts = renderer.sample_surface(cfg.num_points, rng, cfg.point_noise)
        return pts
    allp = np.concatenate(depth_points) if depth_points else np.zeros((0, 6))
    if len(allp) > cfg.num_points:
        allp = allp[rng.choice(len(allp), cfg.num_points, replace=False)]
    P = allp[:, :3] + rng.normal(0, cfg.point_noise, (len(allp), 3)) if cfg.point_noise > 0 else allp[:, :3]
    return {"points": P.astype(np.float32), "colors": allp[:, 3:].astype(np.float32),
            "normals": np.zeros((len(allp), 3), np.float32)}


def with_size(cfg: SceneConfig, size: str) -> SceneConfig:
    """``cfg`` with ``WIDTHxHEIGHT`` applied."""
    try:
        w, h = (int(x) for x in size.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must look like 640x480, got {size!r}") from None
    return replace(cfg, width=w, height=h)
