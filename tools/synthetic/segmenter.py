"""A simulated 2D panoptic segmenter: turns a view's exact labels into the view-inconsistent,
imperfect masks a Mask2Former/Detic-like model produces.

Effects, each with its own rate (probabilities are per segment or per touching pair, per view):
- ids permuted: always; thing ids are a random permutation of 1..T in every view;
- split: a thing covering at least ``split_area_frac`` of the image is cut in two by a random
  line through its centroid;
- merge: two things touching in 3D (adjacent pixels at nearly equal depth) become one segment;
- miss: a thing below ``miss_area_frac`` of the image (after split/merge) is dropped, as is any
  thing with ``miss_rate``; its pixels take the label of the nearest stuff pixel;
- boundary: a thing's mask is eroded or dilated by 1..``boundary_max_px`` pixels;
- class flip: a thing gets another thing class, a stuff region another stuff class;
- confidence: per segment in ``conf_range`` (times ``conf_noisy_factor`` for segments an effect
  touched), lowered near every predicted boundary.

Convention: pixel-valued settings are given for a 640-pixel-wide image and scaled with the
width; area settings are fractions of the image. Predicted instance ids are only given to thing
classes (0 elsewhere), like the Mask2Former panoptic output used by Panoptic Lifting.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Dict, NamedTuple, Tuple

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .classes import NUM_CLASSES, STUFF_CLASSES, THING_CLASSES

REFERENCE_WIDTH = 640
_STUFF_CODE = 1 << 24  # panoptic code of stuff class c is _STUFF_CODE + c (things: their instance id)


@dataclass(frozen=True)
class NoiseConfig:
    miss_area_frac: float = 0.0  # things smaller than this fraction of the image may be missed
    miss_small_rate: float = 0.0  # probability that such a small thing is missed
    miss_rate: float = 0.0  # probability that any thing is missed
    merge_rate: float = 0.0  # probability per touching pair of things
    touch_depth_abs: float = 0.03  # m: depth step across a contact still counted as touching ...
    touch_depth_rel: float = 0.02  # ... plus this fraction of the depth
    touch_min_contact_px: float = 3.0  # contact length (px at 640 wide) for a pair to count as touching
    split_rate: float = 0.0  # probability per large thing
    split_area_frac: float = 0.05  # "large": at least this fraction of the image
    boundary_rate: float = 0.0  # probability per thing of an eroded or dilated mask
    boundary_max_px: float = 2.0  # radius 1..this (px at 640 wide)
    thing_flip_rate: float = 0.0  # probability per thing segment of a wrong thing class
    stuff_flip_rate: float = 0.0  # probability per stuff region of a wrong stuff class
    conf_range: Tuple[float, float] = (0.85, 0.99)
    conf_noisy_factor: float = 0.8
    conf_boundary_drop: float = 0.5  # confidence at a boundary is (1 - drop) times the segment's
    conf_boundary_px: float = 3.0  # e-folding distance of the boundary dip (px at 640 wide)

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def with_overrides(self, overrides: Dict[str, str]) -> "NoiseConfig":
        """A copy with ``name=value`` overrides from the command line (values parsed as floats)."""
        known = {f.name: f for f in fields(self)}
        out = {}
        for k, v in overrides.items():
            if k not in known:
                raise ValueError(f"unknown noise setting {k!r}; known: {', '.join(known)}")
            out[k] = tuple(float(x) for x in v.split(",")) if k == "conf_range" else float(v)
        return replace(self, **out)


PRESETS: Dict[str, NoiseConfig] = {
    "clean": NoiseConfig(conf_range=(0.95, 1.0), conf_boundary_drop=0.2),
    "realistic": NoiseConfig(miss_area_frac=8e-4, miss_small_rate=0.7, miss_rate=0.02, merge_rate=0.25,
                             split_rate=0.15, split_area_frac=0.06, boundary_rate=0.5, boundary_max_px=2,
                             thing_flip_rate=0.08, stuff_flip_rate=0.04),
    "hard": NoiseConfig(miss_area_frac=2e-3, miss_small_rate=0.9, miss_rate=0.06, merge_rate=0.5,
                        split_rate=0.35, split_area_frac=0.04, boundary_rate=0.8, boundary_max_px=4,
                        thing_flip_rate=0.2, stuff_flip_rate=0.1, conf_range=(0.6, 0.95)),
}


def noise_preset(name: str) -> NoiseConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown noise preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


class SegmenterOutput(NamedTuple):
    instance: np.ndarray  # [H, W] uint16 predicted thing ids (0 = stuff / none), inconsistent across views
    semantic: np.ndarray  # [H, W] uint8 predicted class
    confidence: np.ndarray  # [H, W] float32 in (0, 1], multiples of 1/256
    stats: Dict[str, int]  # what happened in this view (counts of each effect)


def _other_class(cls: np.ndarray, choices: Tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A uniformly random class from ``choices`` different from each entry of ``cls`` [n]."""
    lst = np.asarray(choices)
    j = rng.integers(0, len(lst) - 1, len(cls))
    pos = np.searchsorted(lst, cls)  # cls is in lst
    return lst[j + (j >= pos)]


def simulate_segmenter(gt_instance: np.ndarray, gt_semantic: np.ndarray, depth: np.ndarray,
                       cfg: NoiseConfig, rng: np.random.Generator) -> SegmenterOutput:
    """Simulated segmenter output for one view.

    gt_instance: [H, W] int GT instance ids (0 = stuff); gt_semantic: [H, W] int GT class;
    depth: [H, W] float metres (0 = no hit). Random draws come from ``rng`` only.
    """
    if gt_instance.shape != gt_semantic.shape or gt_instance.shape != depth.shape or gt_instance.ndim != 2:
        raise ValueError(f"simulate_segmenter: shapes differ or are not 2D: instance {gt_instance.shape}, "
                         f"semantic {gt_semantic.shape}, depth {depth.shape}")
    H, W = gt_instance.shape
    npx = H * W
    px = W / REFERENCE_WIDTH  # pixel settings scale with the width
    code = np.where(gt_instance > 0, gt_instance.astype(np.int64), _STUFF_CODE + gt_semantic.astype(np.int64))
    uniq, lab = np.unique(code, return_inverse=True)
    lab = lab.reshape(H, W)  # [H, W] segment index 0..K-1
    K = len(uniq)
    thing = uniq < _STUFF_CODE  # [K]
    cls = np.zeros(K, np.int64)
    cls[lab.ravel()] = gt_semantic.ravel()
    parent = np.arange(K)  # GT segment each predicted segment stems from
    noisy = np.zeros(K, bool)
    stats = {"gt_things": int(thing.sum())}

    # ---- split large things by a line through the centroid
    area = np.bincount(lab.ravel(), minlength=K)
    split = thing & (area >= cfg.split_area_frac * npx) & (rng.random(K) < cfg.split_rate)
    stats["split"] = int(split.sum())
    if split.any():
        ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
        cx = np.bincount(lab.ravel(), xs.ravel(), K) / np.maximum(area, 1)
        cy = np.bincount(lab.ravel(), ys.ravel(), K) / np.maximum(area, 1)
        ang = rng.uniform(0, np.pi, K)
        side = (xs - cx[lab]) * np.cos(ang)[lab] + (ys - cy[lab]) * np.sin(ang)[lab] > 0
        n_new = int(split.sum())
        new_id = np.full(K, -1)
        new_id[split] = K + np.arange(n_new)
        lab = np.where(split[lab] & side, new_id[lab], lab)
        thing = np.concatenate([thing, np.ones(n_new, bool)])
        cls = np.concatenate([cls, cls[split]])
        parent = np.concatenate([parent, parent[split]])
        noisy = np.concatenate([noisy | split, np.ones(n_new, bool)])
        K += n_new

    # ---- merge things that touch in 3D
    lo, hi, n_pairs = _touching_pairs(lab, depth, thing, cfg, max(1, round(cfg.touch_min_contact_px * px)))
    lo, hi = lo[parent[lo] != parent[hi]], hi[parent[lo] != parent[hi]]  # never re-join a split
    merge = rng.random(len(lo)) < cfg.merge_rate
    stats["touching_pairs"], stats["merged_pairs"] = int(len(lo)), int(merge.sum())
    if merge.any():
        graph = coo_matrix((np.ones(int(merge.sum())), (lo[merge], hi[merge])), shape=(K, K))
        n_comp, comp = connected_components(graph, directed=False)
        area = np.bincount(lab.ravel(), minlength=K)
        order = np.argsort(area, kind="stable")  # the largest member names the merged segment
        c_cls = np.zeros(n_comp, np.int64)
        c_parent = np.zeros(n_comp, np.int64)
        c_cls[comp[order]] = cls[order]
        c_parent[comp[order]] = parent[order]
        c_thing = np.zeros(n_comp, bool)
        c_thing[comp] = thing
        c_noisy = np.zeros(n_comp, bool)
        np.logical_or.at(c_noisy, comp, noisy)
        c_noisy |= np.bincount(comp, minlength=n_comp) > 1
        lab, thing, cls, parent, noisy, K = comp[lab], c_thing, c_cls, c_parent, c_noisy, n_comp

    # ---- miss small things (and a few others); their pixels join the nearest stuff region
    area = np.bincount(lab.ravel(), minlength=K)
    small = thing & (area > 0) & (area < cfg.miss_area_frac * npx)
    miss = (small & (rng.random(K) < cfg.miss_small_rate)) | (thing & (area > 0) & (rng.random(K) < cfg.miss_rate))
    stats["small"], stats["missed"] = int(small.sum()), int(miss.sum())
    if miss.any():
        missed_px = miss[lab]
        stuff_px = ~thing[lab]
        if stuff_px.any():
            iy, ix = ndimage.distance_transform_edt(~stuff_px, return_distances=False, return_indices=True)
            lab = np.where(missed_px, lab[iy, ix], lab)
        else:  # the view is all things: missed pixels become void
            thing, cls = np.append(thing, False), np.append(cls, 0)
            parent, noisy = np.append(parent, -1), np.append(noisy, True)
            lab = np.where(missed_px, K, lab)
            K += 1

    # ---- erode or dilate thing boundaries
    area = np.bincount(lab.ravel(), minlength=K)
    act = thing & (area > 0) & (rng.random(K) < cfg.boundary_rate)
    r_max = max(1, int(round(cfg.boundary_max_px * px)))
    radius = rng.integers(1, r_max + 1, K)
    erode = rng.random(K) < 0.5
    er = np.where(act & erode, radius, 0)
    di = np.where(act & ~erode, radius, 0)
    stats["eroded"], stats["dilated"] = int((er > 0).sum()), int((di > 0).sum())
    noisy |= act
    lab = _erode_dilate(lab, er, di)

    # ---- class flips
    flip_t = thing & (rng.random(K) < cfg.thing_flip_rate)
    flip_s = ~thing & np.isin(cls, STUFF_CLASSES) & (rng.random(K) < cfg.stuff_flip_rate)
    cls = cls.copy()
    if flip_t.any():
        cls[flip_t] = _other_class(cls[flip_t], THING_CLASSES, rng)
    if flip_s.any():
        cls[flip_s] = _other_class(cls[flip_s], STUFF_CLASSES, rng)
    noisy |= flip_t | flip_s
    area = np.bincount(lab.ravel(), minlength=K)
    stats["thing_flips"] = int((flip_t & (area > 0)).sum())
    stats["stuff_flips"] = int((flip_s & (area > 0)).sum())

    # ---- ids: a fresh random permutation in every view
    present = thing & (area > 0)
    ids = np.zeros(K, np.int64)
    ids[present] = rng.permutation(int(present.sum())) + 1
    stats["pred_things"] = int(present.sum())
    instance = ids[lab].astype(np.uint16)
    semantic = cls[lab].astype(np.uint8)

    # ---- confidence: per segment, dipping towards every predicted boundary
    lo_c, hi_c = cfg.conf_range
    base = rng.uniform(lo_c, hi_c, K) * np.where(noisy, cfg.conf_noisy_factor, 1.0)
    edge = np.zeros((H, W), bool)
    dx = lab[:, 1:] != lab[:, :-1]
    dy = lab[1:, :] != lab[:-1, :]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    dist = ndimage.distance_transform_edt(~edge) if edge.any() else np.full((H, W), np.inf)
    conf = base[lab] * (1.0 - cfg.conf_boundary_drop * np.exp(-dist / max(cfg.conf_boundary_px * px, 0.5)))
    conf = np.clip(np.round(conf * 256.0), 1, 256).astype(np.float32) / 256.0
    return SegmenterOutput(instance, semantic, conf, stats)


def _touching_pairs(lab: np.ndarray, depth: np.ndarray, thing: np.ndarray, cfg: NoiseConfig,
                    min_contact: int) -> Tuple[np.ndarray, np.ndarray, int]:
    """Pairs (lo, hi) of thing segments with at least ``min_contact`` 4-adjacent pixel pairs at
    nearly equal depth (they touch in 3D, not merely overlap in the image)."""
    keys = []
    for a, b, da, db in ((lab[:, :-1], lab[:, 1:], depth[:, :-1], depth[:, 1:]),
                         (lab[:-1, :], lab[1:, :], depth[:-1, :], depth[1:, :])):
        tol = cfg.touch_depth_abs + cfg.touch_depth_rel * np.minimum(da, db)
        m = (a != b) & thing[a] & thing[b] & (np.abs(da - db) <= tol) & (da > 0) & (db > 0)
        lo, hi = np.minimum(a[m], b[m]), np.maximum(a[m], b[m])
        keys.append(lo.astype(np.int64) * len(thing) + hi)
    keys = np.concatenate(keys)
    uniq, count = np.unique(keys, return_counts=True)
    uniq = uniq[count >= min_contact]
    return uniq // len(thing), uniq % len(thing), len(uniq)


def _erode_dilate(lab: np.ndarray, er: np.ndarray, di: np.ndarray) -> np.ndarray:
    """Erodes segment k by er[k] pixels and dilates it by di[k] pixels (square windows).

    Eroded pixels take the neighbouring label found in the window; dilation claims pixels of
    segments that are not dilating themselves (nearest radius first)."""
    out = lab.copy()
    if er.any():
        r_max = int(er.max())
        bdist = np.full(lab.shape, r_max + 1, np.int64)  # Chebyshev distance to another label
        other = lab.copy()
        mx, mn = lab, lab
        for r in range(1, r_max + 1):
            mx = ndimage.maximum_filter(mx, size=3, mode="nearest")  # max over the (2r+1)^2 window
            mn = ndimage.minimum_filter(mn, size=3, mode="nearest")
            first = ((mx != lab) | (mn != lab)) & (bdist > r_max)
            bdist[first] = r
            other[first] = np.where(mx != lab, mx, mn)[first]
        gone = er[lab] >= bdist
        out[gone] = other[gone]
    if di.any():
        claimed = di[lab] > 0  # dilating segments keep their own pixels
        for r in range(1, int(di.max()) + 1):
            src = np.where(di[lab] >= r, lab, -1)
            grown = ndimage.maximum_filter(src, size=2 * r + 1, mode="constant", cval=-1)
            take = (grown >= 0) & (grown != lab) & ~claimed
            out[take] = grown[take]
            claimed |= take
    return out


def probabilities(semantic: np.ndarray, confidence: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """[H, W, C] float16 class probabilities: ``confidence`` on the predicted class, the rest
    spread evenly over the other classes."""
    rest = ((1.0 - confidence) / (num_classes - 1)).astype(np.float16)
    p = np.broadcast_to(rest[..., None], semantic.shape + (num_classes,)).copy()
    np.put_along_axis(p, semantic[..., None].astype(np.int64), confidence[..., None].astype(np.float16), axis=-1)
    return p
