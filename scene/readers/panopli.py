"""Panoptic-Lifting / Contrastive-Lift "PanopLi" folders (Replica, ScanNet, our generator).

Layout (DATA.md section 3): ``color/<name>.jpg``, ``pose/<name>.txt`` (4x4 camera-to-world,
OpenCV axes), ``intrinsic/intrinsic_color.txt`` (4x4, K top-left), ``splits.json``, label
folders ``rs_*`` (GT) and ``m2f_*`` (predictions), optional ``depth/`` (uint16 mm),
``m2f_probabilities/<name>.npz`` and ``invalid/<name>.jpg``.

Convention: the data's ray through pixel (u, v) has direction ((u - cx)/fx, (v - cy)/fy, 1)
(pixel centres at integers), so gsplat's pixel-centre K is K with cx + 0.5, cy + 0.5.
K is given at the colour resolution of the first view (name order), as the PanopLi loader
assumes; a view whose colour image has another size (same aspect) gets K rescaled per axis,
after the +0.5 shift (scaling is only exact in the pixel-centre convention).
"""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from scene.cameras import SceneError, SceneInfo
from scene.readers.common import (
    prediction_and_gt_sources, IMAGE_EXTS, FileIndex, View, assemble, build_frames, c2w_to_world_view, checked_size, folder_label, name_sort_key, parse_matrix, points_from_depth, require_dir, rescale_K, same_aspect, sort_names,
)

NUM_CLASSES = 22  # 21 reduced-ScanNet classes + 0 = void
THING_CLASSES = (4, 5, 6, 14, 15, 16, 17, 18, 20)
CLASS_NAMES = ("void", "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "counter",
               "shelves", "curtain", "ceiling", "refrigerator", "television", "person", "toilet", "sink", "lamp",
               "bag", "otherprop")  # DATA.md section 3
DEFAULT_SEG_DIR = "m2f_instance"
DEFAULT_SEM_DIR = "m2f_semantics"
FALLBACK_HOLD = 8  # without splits.json: every 8th view is a test view (3DGS rule)


def read_intrinsic(path: str) -> np.ndarray:
    """K  # [3, 3] from a 4x4 (or 3x3) intrinsic file, in the file's own pixel convention."""
    try:
        with open(path, "r") as f:
            n = len(f.read().split())
    except FileNotFoundError:
        raise SceneError(f"{path}: intrinsics not found; add intrinsic/intrinsic_color.txt (4x4, K top-left)") from None
    M = parse_matrix(path, 4 if n == 16 else 3, 4 if n == 16 else 3, "intrinsic matrix",
                     fix="write the 4x4 (or 3x3) K of the colour images, K top-left")
    K = M[:3, :3].copy()
    if K[0, 0] <= 0 or K[1, 1] <= 0 or abs(K[2, 2] - 1.0) > 1e-6 or np.any(K[2, :2] != 0):
        raise SceneError(f"{path}: not a pinhole K (need fx, fy > 0 and last row 0 0 1); fix the intrinsics")
    return K


def read_splits(json_path: str) -> Optional[tuple[list[str], list[str]]]:
    """``(train names, test names)`` from splits.json, or None when the file is absent."""
    if not os.path.isfile(json_path):
        return None
    try:
        with open(json_path, "r", encoding="utf-8") as f:
            splits = json.load(f)
    except json.JSONDecodeError as e:
        raise SceneError(f"{json_path}: invalid JSON ({e.msg} at line {e.lineno}); fix the split file") from None
    if not isinstance(splits, dict) or not isinstance(splits.get("train"), list):
        raise SceneError(f"{json_path}: needs a 'train' list of view names (and 'test'); fix the split file")
    test = splits.get("test", [])
    if not isinstance(test, list):
        raise SceneError(f"{json_path}: 'test' must be a list of view names; fix the split file")
    train_names = [str(x) for x in splits["train"]]
    test_names = [str(x) for x in test]
    overlap = set(train_names) & set(test_names)
    if overlap:
        raise SceneError(f"{json_path}: view '{sorted(overlap, key=name_sort_key)[0]}' is in both train and test "
                         f"({len(overlap)} such); make the splits disjoint")
    return train_names, test_names


def read_panopli(path: str, *, seg_dir: Optional[str] = None, sem_dir: Optional[str] = None,
                 eval: bool = False, allow_missing_masks: bool = False) -> SceneInfo:
    """Read a PanopLi scene. Defaults: ``seg_dir="m2f_instance"``, ``sem_dir="m2f_semantics"``.

    Classes are always the 22 of DATA.md (the GT is scored against them), so a PanopLi scene without
    semantic masks gets no derived fg/bg head (unlike COLMAP, Blender and Messy-Rooms).

    Split: splits.json (names sorted by ``int(stem)`` when numeric); without it every 8th view
    is a test view. Initial points: back-projected depth of train views (if ``depth/``), else
    None and a box around the train cameras padded by the camera extent.
    """
    color_dir = os.path.join(path, "color")
    pose_dir = os.path.join(path, "pose")
    require_dir(color_dir, "colour folder", "a PanopLi scene needs color/<name>.jpg")
    require_dir(pose_dir, "pose folder", "a PanopLi scene needs pose/<name>.txt (4x4 camera-to-world)")
    intr_path = os.path.join(path, "intrinsic", "intrinsic_color.txt")
    K_data = read_intrinsic(intr_path)

    colors = FileIndex(color_dir, IMAGE_EXTS)
    poses = FileIndex(pose_dir, (".txt",))
    splits_json = os.path.join(path, "splits.json")
    splits = read_splits(splits_json)
    if splits is None:
        names = sort_names(colors.stems())
        if not names:
            raise SceneError(f"{color_dir}: no colour images (.jpg/.png); add the views")
        test_set = set(names[::FALLBACK_HOLD])
        train_names = [n for n in names if n not in test_set]
        test_names = [n for n in names if n in test_set]
        split_source = f"every {FALLBACK_HOLD}th view (no splits.json)"
    else:
        train_names, test_names = splits
        for n in train_names + test_names:
            if colors.find(n) is None:
                raise SceneError(f"{splits_json}: view '{n}' has no colour image in {color_dir}; "
                                 f"add color/{n}.jpg or remove it from the split")
        split_source = "splits.json"
    all_names = sort_names(train_names + test_names)

    ref_wh: Optional[tuple[int, int]] = None
    K_px = K_data.copy()
    K_px[0, 2] += 0.5  # data convention -> pixel-centre convention
    K_px[1, 2] += 0.5
    views: dict[str, View] = {}
    for n in all_names:
        img = colors.find(n)
        W, H = checked_size(img)
        if ref_wh is None:
            ref_wh = (W, H)
            if not (0 < K_px[0, 2] < W and 0 < K_px[1, 2] < H):
                raise SceneError(
                    f"{intr_path}: principal point ({K_data[0, 2]:.1f}, {K_data[1, 2]:.1f}) lies outside the "
                    f"{W}x{H} colour image {img}: K is for another resolution; rescale it to the colour images")
        if (W, H) == ref_wh:
            K = K_px
        elif same_aspect((W, H), ref_wh):
            K = rescale_K(K_px, ref_wh, (W, H))
        else:
            raise SceneError(f"{img}: colour image is {W}x{H} but the first view is {ref_wh[0]}x{ref_wh[1]} "
                             f"(other aspect ratio); all views must share one camera")
        pose_path = poses.find(n)
        if pose_path is None:
            raise SceneError(f"{os.path.join(pose_dir, n + '.txt')}: pose of view '{n}' not found; add it or "
                             f"remove the view from {'splits.json' if splits else 'color/'}")
        c2w = parse_matrix(pose_path, 4, 4, "pose")
        views[n] = View(n, n, img, K, c2w_to_world_view(c2w, pose_path), W, H)

    sources = prediction_and_gt_sources(path, seg_dir, sem_dir, default_seg=DEFAULT_SEG_DIR,
                                        default_sem=DEFAULT_SEM_DIR, gt_sem="rs_semantics", gt_inst="rs_instance")
    seg_folder, sem_folder, conf_folder = (src.folder for src in sources[:3])
    frames, n_resize = build_frames([views[n] for n in all_names], sources, allow_missing_masks)
    by_name = {f.camera.name: f for f in frames}
    train = [by_name[n] for n in sort_names(train_names)]
    test = [by_name[n] for n in sort_names(test_names)]

    points = cols = None
    depth_dir = os.path.join(path, "depth")
    if os.path.isdir(depth_dir):
        points, cols = points_from_depth([views[n] for n in sort_names(train_names)],
                                         FileIndex(depth_dir, (".png", ".npy")))
    pkl = os.path.join(path, "segmentation_data.pkl")
    return assemble(
        "panopli", path, train, test, points=points, colors=cols, bbox=None, eval=eval,
        num_classes=NUM_CLASSES, thing_classes=THING_CLASSES, class_names=CLASS_NAMES,
        seg_dir=folder_label(path, seg_folder), sem_dir=folder_label(path, sem_folder),
        extras={"labels_to_resize": n_resize, "split_source": split_source,
                "points_source": "depth" if points is not None else None,
                "confidence_dir": folder_label(path, conf_folder),
                "segmentation_data": pkl if os.path.isfile(pkl) else None})
