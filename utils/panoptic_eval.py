"""Scene-level panoptic quality (PQ^scene) and mIoU, computed the way the papers do.

Panoptic Lifting, Contrastive-Lift and UniC-Lift all report numbers from one evaluator;
this module reimplements its rules (docs/EVALUATION.md) with vectorised counting:
segments are packed ``(class, id)`` keys, areas and intersections are ``bincount`` s of
packed keys, and matching is a mask over the few thousand intersecting pairs.

Convention: labels are integer maps; class 0 is void in the PanopLi variant (GT pixels of
class 0 are dropped before anything is counted) and background (stuff) in the Messy-Rooms
variant. Instance id 0 means "no instance"; ids of stuff pixels are ignored. Scores are
reported x100. Pixel axis letters: M pixels (all views concatenated), K segments,
C classes.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from utils.image_io import load_label

ArrayLike = Union[np.ndarray, Tensor]

EVAL_SIZE = (512, 512)  # (width, height) every label map is resized to before scoring
ROBUST_FRACTION = 0.005  # classes rarer than this are filtered (PQ: pred OR GT; mIoU: AND)
MATCH_IOU = 0.5  # strict: a pair matches when IoU > 0.5
# Above this many possible packed keys, segments are found by sorting (torch.unique)
# instead of a dense bincount over the key range.
_DENSE_KEY_LIMIT = 1 << 24
_INT32_MAX = (1 << 31) - 1


class MissingGroundTruth(ValueError):
    """The scene has no ground-truth labels, so only PSNR/SSIM can be reported."""


@dataclass(frozen=True)
class Variant:
    """Which class list the evaluator scores against.

    ``num_classes`` counts class 0. Stuff classes are all ids in ``[0, num_classes)`` that
    are not in ``thing_classes``. ``has_void``: GT class 0 marks unlabelled pixels, which
    are dropped before scoring (PanopLi); without it class 0 is an ordinary stuff class.
    """
    name: str
    num_classes: int
    thing_classes: Tuple[int, ...]
    has_void: bool

    def __post_init__(self):
        if self.num_classes < 1:
            raise ValueError(f"Variant {self.name!r}: num_classes must be >= 1, got {self.num_classes}")
        bad = [c for c in self.thing_classes if not 0 <= c < self.num_classes]
        if bad:
            raise ValueError(f"Variant {self.name!r}: thing classes {bad} outside [0, {self.num_classes})")

    @property
    def stuff_classes(self) -> Tuple[int, ...]:
        things = set(self.thing_classes)
        return tuple(c for c in range(self.num_classes) if c not in things)


PANOPLI = Variant(name="panopli", num_classes=22, thing_classes=(4, 5, 6, 14, 15, 16, 17, 18, 20), has_void=True)
MESSY = Variant(name="messy", num_classes=2, thing_classes=(1,), has_void=False)


def variant_for(scene_info) -> Variant:
    """The evaluation variant of a ``SceneInfo``; raises ``MissingGroundTruth`` if it has no GT.

    PanopLi folders (Replica, ScanNet, the synthetic suite) -> void-aware variant, Messy-Rooms
    -> fg/bg without void; the scene's own ``num_classes`` / ``thing_classes`` override the
    defaults when the reader filled them in. Other formats are scored only when the reader
    gave them GT label paths and a class count (class 0 = void, as in PanopLi).
    """
    fmt = scene_info.format
    frames = list(scene_info.test) or list(scene_info.train)
    has_gt = bool(frames) and all(f.gt_semantic_path and f.gt_instance_path for f in frames)
    if fmt in ("panopli", "messy"):
        base = PANOPLI if fmt == "panopli" else MESSY
        num_classes = scene_info.num_classes or base.num_classes
        things = tuple(scene_info.thing_classes) if scene_info.thing_classes else base.thing_classes
        if num_classes == base.num_classes and things == base.thing_classes:
            return base
        return Variant(name=base.name, num_classes=num_classes, thing_classes=things, has_void=base.has_void)
    if has_gt and getattr(scene_info, "semantic_from_instances", False):
        return MESSY  # instance masks only: object vs background, as Messy-Rooms is scored
    if scene_info.num_classes and has_gt:
        return Variant(name=fmt, num_classes=scene_info.num_classes,
                       thing_classes=tuple(scene_info.thing_classes), has_void=True)
    raise MissingGroundTruth(f"scene {scene_info.path} ({fmt} format) has no ground-truth labels: "
                             "only PSNR/SSIM are reported")


# --------------------------------------------------------------------------- resizing

def resize_nearest(label: ArrayLike, size: Tuple[int, int] = EVAL_SIZE) -> ArrayLike:
    """Resize an integer label map ``[H, W]`` to ``size = (width, height)`` by nearest neighbour.

    Bit-exact with Panoptic Lifting's ``read_and_resize_labels`` (``PIL.Image.resize(size,
    Image.NEAREST)``), whose numbers every paper reports: output pixel x reads source column
    ``floor((x + 0.5) * W / width)`` in float64 (pixel-centre sampling; equals torch's
    'nearest-exact', NOT torch's 'nearest', which samples ``floor(x * W / width)`` and shifts
    labels by up to one source pixel). Works on any integer dtype (PIL cannot hold int64),
    returns the input's type, dtype and device.
    """
    if label.ndim != 2:
        raise ValueError(f"resize_nearest expects a [H, W] label map, got shape {tuple(label.shape)}")
    out_w, out_h = int(size[0]), int(size[1])
    in_h, in_w = int(label.shape[0]), int(label.shape[1])
    if (in_h, in_w) == (out_h, out_w):
        return label
    rows = _nearest_index(in_h, out_h)  # [out_h]
    cols = _nearest_index(in_w, out_w)  # [out_w]
    if isinstance(label, Tensor):
        r = torch.from_numpy(rows).to(label.device)
        c = torch.from_numpy(cols).to(label.device)
        return label.index_select(0, r).index_select(1, c)
    return label[rows[:, None], cols[None, :]]


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output position under PIL's NEAREST rule. [n_out] int64."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"cannot resize between sizes {n_in} and {n_out}")
    idx = np.floor((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.minimum(idx, n_in - 1)


# --------------------------------------------------------------------------- helpers

def _as_labels(x: ArrayLike, name: str) -> Tensor:
    """A 1-D integer tensor (no copy when possible) of a label list; one-line error otherwise.

    Keeps narrow integer dtypes (arithmetic below promotes to int64 where keys need it);
    numpy's unsigned 16/32-bit labels are widened because torch has few uint16 kernels.
    """
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.integer):
            raise TypeError(f"{name} must hold integers, got dtype {x.dtype}")
        if x.dtype == np.uint16:
            x = x.astype(np.int32)
        elif x.dtype in (np.uint32, np.uint64):
            x = x.astype(np.int64)
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, Tensor):
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{name} must hold integers, got dtype {x.dtype}")
        if x.dtype in (torch.uint16, torch.uint32, torch.uint64):
            x = x.long()
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D (all pixels concatenated), got shape {tuple(x.shape)}")
    return x


def _check_same_length(**arrays: Tensor) -> None:
    lengths = {k: int(v.shape[0]) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"label lists differ in length: {lengths}")


def _drop_void(variant: Variant, gt_sem: Tensor, *others: Tensor) -> Tuple[Tensor, ...]:
    """Remove pixels whose GT class is 0 when the variant has void (a no-op if none are)."""
    if not variant.has_void:
        return (gt_sem, *others)
    keep = gt_sem != 0  # [M]
    if bool(keep.all()):
        return (gt_sem, *others)
    return tuple(t[keep] for t in (gt_sem, *others))


def _count_distinct(keys: Tensor, key_range: int) -> Tuple[Tensor, Tensor]:
    """Distinct values of ``keys`` (all in [0, key_range)) and how often each occurs.

    Returns (distinct sorted keys [K], counts [K]): a dense bincount when the range is
    small, a sort otherwise.
    """
    if key_range <= max(_DENSE_KEY_LIMIT, keys.numel()):
        counts = torch.bincount(keys, minlength=key_range)  # [key_range]
        distinct = torch.nonzero(counts).squeeze(1)  # [K]
        return distinct, counts[distinct]
    return torch.unique(keys, sorted=True, return_counts=True)


def _raw_segments(sem: Tensor, inst: Tensor, num_classes: int, side: str) -> Tuple[Tensor, Tensor, Tensor]:
    """Distinct (class, id) pairs as they appear in the labels, before any filtering.

    Convention: class values outside [0, C) are stored as class C (unknown). Returns
    (per-pixel raw segment id [M] int64, class per segment [R] in [0, C], id per segment [R]).
    """
    if sem.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=sem.device)
        return empty, empty, empty
    lo = int(inst.min())
    if lo < 0:
        raise ValueError(f"{side} instance ids must be >= 0, got {lo}")
    stride = int(inst.max()) + 1
    cls = sem.to(torch.long, copy=True).clamp_(-1, num_classes)  # [M] in [-1, C]: both ends mean "unknown"
    keys = cls.add_(1).mul_(stride).add_(inst)  # [M] int64 packed (class + 1, id)
    del cls
    key_range = (num_classes + 2) * stride
    if key_range <= max(_DENSE_KEY_LIMIT, keys.numel()):
        present = torch.bincount(keys, minlength=key_range) > 0  # [key_range]
        distinct = torch.nonzero(present).squeeze(1)  # [R]
        lut = torch.cumsum(present, 0) - 1  # [key_range] key -> raw segment id
        seg = lut[keys]  # [M]
    else:
        distinct, seg = torch.unique(keys, sorted=True, return_inverse=True)
    seg_cls = distinct // stride - 1  # [R] in [-1, C]
    seg_cls = torch.where(seg_cls < 0, torch.full_like(seg_cls, num_classes), seg_cls)
    return seg, seg_cls, distinct % stride


def _merge(cls: Tensor, ids: Tensor) -> Tuple[Tensor, Tensor]:
    """Merge raw segments into final (class, id) segments. Returns (final id per raw [R], class per final [K])."""
    stride = int(ids.max()) + 1 if ids.numel() else 1
    keys, inverse = torch.unique(cls * stride + ids, sorted=True, return_inverse=True)  # [K], [R]
    return inverse, keys // stride


# --------------------------------------------------------------------------- PQ^scene

def panoptic_quality(pred_sem: ArrayLike, pred_inst: ArrayLike, gt_sem: ArrayLike, gt_inst: ArrayLike,
                     variant: Variant) -> dict:
    """Scene-level panoptic quality over pixels of all views, concatenated.

    Args: four 1-D integer arrays/tensors of equal length M (class and instance id per
    pixel, prediction and GT). Instance ids must be >= 0 (on stuff pixels too). Pixels
    with GT class 0 are dropped first when ``variant.has_void``.

    Returns ``{"pq", "sq", "rq"`` (plain means over the classes that survive the filter,
    x100; nan if none survive), ``"per_class": {c: {"pq", "sq", "rq"`` (x100), ``"tp", "fp",
    "fn", "iou_sum", "is_thing"}}``, ``"classes"`` (surviving ids, sorted), ``"removed":
    {"unused": [...], "non_robust": [...]}}``.

    Full-length work is a few vector passes: every pixel is reduced to its raw (class, id)
    segment per side, the intersection table of raw segments is one bincount, and the
    rules then run on those small tables (raw segments -> filtered, merged segments).
    """
    ps, pi = _as_labels(pred_sem, "pred_sem"), _as_labels(pred_inst, "pred_inst")
    gs, gi = _as_labels(gt_sem, "gt_sem"), _as_labels(gt_inst, "gt_inst")
    _check_same_length(pred_sem=ps, pred_inst=pi, gt_sem=gs, gt_inst=gi)
    gs, ps, pi, gi = _drop_void(variant, gs, ps, pi, gi)
    device = ps.device
    C = variant.num_classes
    V = C  # class index of void (and of unknown classes) from here on
    M = int(ps.numel())
    if M == 0:
        raise ValueError("panoptic_quality: no pixels left to score (every GT pixel is void?)")

    # Rule 4 at raw level: raw segments per side and the raw intersection table.
    seg_p, rcls_p, rid_p = _raw_segments(ps, pi, C, "predicted")  # [M], [Rp], [Rp]
    seg_g, rcls_g, rid_g = _raw_segments(gs, gi, C, "GT")  # [M], [Rg], [Rg]
    Rp, Rg = int(rcls_p.numel()), int(rcls_g.numel())
    pair = seg_p.mul_(Rg).add_(seg_g)  # [M] packed (raw pred, raw GT), in place
    del seg_p, seg_g
    pair_keys, pair_px = _count_distinct(pair, Rp * Rg)  # [T], [T]
    del pair
    rp, rg = pair_keys // Rg, pair_keys % Rg  # [T] raw segment of each side
    zeros = torch.zeros(C + 1, dtype=torch.long, device=device)
    cnt_p = zeros.index_add(0, rcls_p[rp], pair_px)[:C]  # [C] predicted pixels per class
    cnt_g = zeros.index_add(0, rcls_g[rg], pair_px)[:C]  # [C] GT pixels per class

    # Rules 1-2: drop classes seen on neither side, and classes that occur on a side with
    # a pixel fraction below ROBUST_FRACTION (either side).
    limit = ROBUST_FRACTION * max(M, 1)
    used = (cnt_p > 0) | (cnt_g > 0)  # [C] bool
    non_robust = ((cnt_p > 0) & (cnt_p < limit)) | ((cnt_g > 0) & (cnt_g < limit))  # [C] bool
    keep = used & ~non_robust  # [C] bool
    is_thing = torch.zeros(C + 1, dtype=torch.bool, device=device)  # [C+1]; void is stuff
    if variant.thing_classes:
        is_thing[torch.tensor(variant.thing_classes, device=device)] = True

    # Rule 3: removed / unknown classes -> void on both sides; ids of stuff and void -> 0.
    class_lut = torch.where(keep, torch.arange(C, device=device), torch.full((C,), V, device=device))
    class_lut = torch.cat([class_lut, torch.tensor([V], device=device)])  # [C+1]

    def final_segments(rcls: Tensor, rid: Tensor) -> Tuple[Tensor, Tensor]:
        cls = class_lut[rcls]  # [R]
        return _merge(cls, torch.where(is_thing[cls], rid, torch.zeros_like(rid)))

    fp_of_raw, cls_p = final_segments(rcls_p, rid_p)  # [Rp], [Kp]
    fg_of_raw, cls_g = final_segments(rcls_g, rid_g)  # [Rg], [Kg]
    Kp, Kg = int(cls_p.numel()), int(cls_g.numel())
    pp, pg = fp_of_raw[rp], fg_of_raw[rg]  # [T] final segment of each raw pair
    merged, inverse = torch.unique(pp * Kg + pg, sorted=True, return_inverse=True)  # [T'], [T]
    inter = torch.zeros(merged.numel(), dtype=torch.long, device=device).index_add_(0, inverse, pair_px)  # [T']
    pp, pg = merged // Kg, merged % Kg  # [T'] final segments of each intersecting pair
    area_p = torch.zeros(Kp, dtype=torch.long, device=device).index_add_(0, pp, inter)  # [Kp]
    area_g = torch.zeros(Kg, dtype=torch.long, device=device).index_add_(0, pg, inter)  # [Kg]

    # Overlap of each segment with the other side's void.
    on_void_g = cls_g[pg] == V  # [T']
    on_void_p = cls_p[pp] == V  # [T']
    p_void = torch.zeros(Kp, dtype=torch.long, device=device).index_add_(0, pp[on_void_g], inter[on_void_g])
    g_void = torch.zeros(Kg, dtype=torch.long, device=device).index_add_(0, pg[on_void_p], inter[on_void_p])

    # Rule 5: same class, GT not void, void-aware union, IoU strictly above 0.5.
    union = area_p[pp] - p_void[pp] + area_g[pg] - g_void[pg] - inter  # [T']
    iou = inter.double() / union.clamp_min(1).double()  # [T']
    match = (cls_p[pp] == cls_g[pg]) & (cls_g[pg] != V) & (iou > MATCH_IOU)  # [T']
    m_cls = cls_g[pg[match]]
    tp = torch.bincount(m_cls, minlength=C + 1)[:C]  # [C]
    iou_sum = torch.bincount(m_cls, weights=iou[match], minlength=C + 1)[:C]  # [C] float64
    matched_p = torch.zeros(Kp, dtype=torch.bool, device=device)
    matched_p[pp[match]] = True
    matched_g = torch.zeros(Kg, dtype=torch.bool, device=device)
    matched_g[pg[match]] = True

    # Rule 6: unmatched segments count unless more than half of them lies in the other's void.
    fn_seg = (cls_g != V) & ~matched_g & ~(g_void.double() / area_g.clamp_min(1).double() > 0.5)  # [Kg]
    fp_seg = (cls_p != V) & ~matched_p & ~(p_void.double() / area_p.clamp_min(1).double() > 0.5)  # [Kp]
    fn = torch.bincount(cls_g[fn_seg], minlength=C + 1)[:C]  # [C]
    fp = torch.bincount(cls_p[fp_seg], minlength=C + 1)[:C]  # [C]

    # Rules 7-8.
    den = tp.double() + 0.5 * fp.double() + 0.5 * fn.double()  # [C]
    pq_c = torch.where(den > 0, iou_sum / den.clamp_min(1e-12), torch.zeros_like(den))
    sq_c = torch.where(tp > 0, iou_sum / tp.clamp_min(1).double(), torch.zeros_like(den))
    rq_c = torch.where(den > 0, tp.double() / den.clamp_min(1e-12), torch.zeros_like(den))

    classes = torch.nonzero(keep).squeeze(1).tolist()
    stats = [t.cpu().tolist() for t in (pq_c, sq_c, rq_c, tp, fp, fn, iou_sum)]
    thing_set = set(variant.thing_classes)
    per_class = {
        c: {"pq": 100.0 * stats[0][c], "sq": 100.0 * stats[1][c], "rq": 100.0 * stats[2][c],
            "tp": int(stats[3][c]), "fp": int(stats[4][c]), "fn": int(stats[5][c]),
            "iou_sum": float(stats[6][c]), "is_thing": c in thing_set}
        for c in classes
    }

    def mean(key: str) -> float:
        return float(np.mean([per_class[c][key] for c in classes])) if classes else float("nan")

    return {
        "pq": mean("pq"), "sq": mean("sq"), "rq": mean("rq"),
        "per_class": per_class, "classes": classes,
        "removed": {"unused": torch.nonzero(~used).squeeze(1).tolist(),
                    "non_robust": torch.nonzero(used & non_robust).squeeze(1).tolist()},
    }


# --------------------------------------------------------------------------- mIoU

def mean_iou(pred_sem: ArrayLike, gt_sem: ArrayLike, variant: Variant) -> dict:
    """Semantic mIoU from one confusion matrix over all pixels (GT void dropped for PanopLi).

    Predicted classes outside [0, C) are dropped; GT classes must lie in [0, C). A class is
    ignored when both its predicted and its GT pixel fraction are below 0.005; classes with
    no pixels on either side have no IoU. Returns ``{"miou"`` (x100, nan-mean),
    ``"per_class_iou": {c: x100 or None}``, ``"ignored": [...]}``.
    """
    ps, gs = _as_labels(pred_sem, "pred_sem"), _as_labels(gt_sem, "gt_sem")
    _check_same_length(pred_sem=ps, gt_sem=gs)
    gs, ps = _drop_void(variant, gs, ps)
    C = variant.num_classes
    if gs.numel() and (int(gs.min()) < 0 or int(gs.max()) >= C):
        raise ValueError(f"GT classes must lie in [0, {C}) for variant {variant.name!r}, "
                         f"got range [{int(gs.min())}, {int(gs.max())}]")
    # Rows 0 and C+1 collect predictions outside [0, C) and are cut off.
    flat = ps.to(torch.long, copy=True).clamp_(-1, C).add_(1).mul_(C).add_(gs)  # [M] pred-major
    conf = torch.bincount(flat, minlength=(C + 2) * C).view(C + 2, C)[1:C + 1].double()  # [C pred, C gt]
    tp = torch.diagonal(conf)  # [C]
    n_pred, n_gt = conf.sum(1), conf.sum(0)  # [C], [C]
    total = float(conf.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = (tp / (n_pred + n_gt - tp)).cpu().numpy()  # [C], nan for 0/0
    if total > 0:
        ignored_mask = ((n_pred / total < ROBUST_FRACTION) & (n_gt / total < ROBUST_FRACTION)).cpu().numpy()
    else:
        ignored_mask = np.ones(C, dtype=bool)
    iou[ignored_mask] = np.nan
    valid_iou = iou[~np.isnan(iou)]
    miou = 100.0 * float(valid_iou.mean()) if valid_iou.size else float("nan")
    return {
        "miou": miou,
        "per_class_iou": {c: (None if np.isnan(iou[c]) else 100.0 * float(iou[c])) for c in range(C)},
        "ignored": np.nonzero(ignored_mask)[0].tolist(),
    }

# --------------------------------------------------------------------------- files

PRED_SEMANTICS_DIR = "pred_semantics"  # uint8 PNG, class per pixel (papers' folder name)
PRED_INSTANCE_DIR = "pred_surrogateid"  # uint16 PNG, scene-consistent instance id


def evaluate_views(pred_dir: str, frames: Sequence, variant: Variant, size: Tuple[int, int] = EVAL_SIZE) -> dict:
    """PQ^scene, SQ, RQ and mIoU of the label files in ``pred_dir`` against the frames' GT.

    Reads ``pred_dir/pred_semantics/<name>.png`` and ``pred_dir/pred_surrogateid/<name>.png``
    per frame (``frame.camera.name``), GT from ``frame.gt_semantic_path`` /
    ``frame.gt_instance_path``; resizes all maps to ``size`` (nearest), drops GT void,
    concatenates every view and scores once (segments are scene-level). Returns
    ``{"PQ_scene", "SQ", "RQ", "mIoU", "details": {...}}``, scores x100. Raises
    ``MissingGroundTruth`` if a frame has no GT, ``FileNotFoundError`` naming a missing file.
    """
    frames = list(frames)
    if not frames:
        raise ValueError("evaluate_views: no frames to evaluate")
    for f in frames:
        if not f.gt_semantic_path or not f.gt_instance_path:
            raise MissingGroundTruth(f"view {f.camera.name} has no ground-truth labels: only PSNR/SSIM are reported")
    jobs = []
    for f in frames:
        name = f.camera.name
        paths = (os.path.join(pred_dir, PRED_SEMANTICS_DIR, f"{name}.png"),
                 os.path.join(pred_dir, PRED_INSTANCE_DIR, f"{name}.png"),
                 f.gt_semantic_path, f.gt_instance_path)
        for p in paths:
            if not os.path.isfile(p):
                raise FileNotFoundError(f"missing label file {p}")
        jobs.append(paths)

    def load_view(paths: Tuple[str, ...]) -> list:
        maps = [resize_nearest(load_label(p), size) for p in paths]  # 4 x [h, w] int64
        for arr, path in zip(maps, paths):
            if arr.size and int(arr.max()) > _INT32_MAX:
                raise ValueError(f"{path}: label id {int(arr.max())} exceeds the evaluator's 32-bit range")
        if variant.has_void:
            keep = maps[2] != 0  # [h, w] GT not void
            return [m[keep].astype(np.int32) for m in maps]
        return [m.ravel().astype(np.int32) for m in maps]

    # PNG decoding releases the GIL: a few threads overlap it. Compact int32 storage.
    n_max = len(frames) * size[0] * size[1]
    buf = [np.empty(n_max, dtype=np.int32) for _ in range(4)]  # pred sem, pred id, GT sem, GT id
    n = 0
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for maps in pool.map(load_view, jobs):
            k = maps[0].size
            for b, m in zip(buf, maps):
                b[n:n + k] = m
            n += k
    ps, pi, gs, gi = (torch.from_numpy(b[:n]) for b in buf)
    pq = panoptic_quality(ps, pi, gs, gi, variant)
    iou = mean_iou(ps, gs, variant)
    details = {
        "variant": variant.name,
        "num_views": len(frames),
        "num_pixels": n,
        "eval_size": list(size),
        "classes": pq["classes"],
        "removed_classes": pq["removed"],
        "per_class_pq": pq["per_class"],
        "per_class_iou": iou["per_class_iou"],
        "miou_ignored_classes": iou["ignored"],
        "totals": {k: sum(v[k] for v in pq["per_class"].values()) for k in ("tp", "fp", "fn")},
    }
    return {"PQ_scene": pq["pq"], "SQ": pq["sq"], "RQ": pq["rq"], "mIoU": iou["miou"], "details": details}
