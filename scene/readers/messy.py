"""Messy-Rooms scenes (Contrastive-Lift's many-object scenes, Kubric renders).

Layout (DATA.md section 4): ``color/<name>.png`` (RGB or RGBA), ``metadata.json``,
GT ``semantic/`` and ``instance/`` ``.npy``, predictions ``detic_semantic/``,
``detic_instance/`` ``.npy``, confidence ``detic_probabilities/<name>.npy``, optional ``depth/``.

Convention (intrinsics): ``metadata.camera.K`` is normalised: row 0 times W, row 1 times H,
then absolute values (Kubric stores signed entries); the result follows the "ray through
pixel (u, v) has direction ((u - cx)/fx, (v - cy)/fy, 1)" convention, so gsplat's K adds 0.5
to cx and cy. Convention (poses): ``positions[i]`` and ``quaternions[i]`` (w, x, y, z) give
camera-to-world in Blender axes; OpenCV c2w = c2w_blender @ diag(1, -1, -1, 1). Frame i of
the metadata is the i-th colour image in name order (``int(stem)`` when numeric).
"""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from scene.cameras import SceneError, SceneInfo
from scene.readers.common import (
    prediction_and_gt_sources, IMAGE_EXTS, FileIndex, View, assemble, build_frames, c2w_to_world_view, checked_size, fgbg_from_instances, folder_label, points_from_depth, quat_wxyz_to_rotmat, require_dir, same_aspect, sort_names,
)

NUM_CLASSES = 2  # 0 background (stuff), 1 object (thing)
THING_CLASSES = (1,)
CLASS_NAMES = ("background", "object")
DEFAULT_SEG_DIR = "detic_instance"
DEFAULT_SEM_DIR = "detic_semantic"
TRAIN_FRACTION = 0.8  # first 80 % of frames (name order) train, last 20 % test
BLENDER_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def read_metadata(json_path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``K_norm  # [3, 3]``, ``positions  # [F, 3]``, ``quaternions  # [F, 4]`` (w, x, y, z)."""
    try:
        with open(json_path, "r", encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise SceneError(f"{json_path}: metadata not found; a Messy-Rooms scene needs metadata.json") from None
    except json.JSONDecodeError as e:
        raise SceneError(f"{json_path}: invalid JSON ({e.msg} at line {e.lineno}); fix or re-export it") from None
    cam = meta.get("camera") if isinstance(meta, dict) else None
    if not isinstance(cam, dict) or not all(k in cam for k in ("K", "positions", "quaternions")):
        raise SceneError(f"{json_path}: needs camera.K, camera.positions and camera.quaternions; re-export it")
    try:
        K = np.array(cam["K"], dtype=np.float64)
        pos = np.array(cam["positions"], dtype=np.float64)
        quat = np.array(cam["quaternions"], dtype=np.float64)
    except (TypeError, ValueError):
        raise SceneError(f"{json_path}: camera.K / positions / quaternions are not numeric arrays; "
                         f"re-export the metadata") from None
    if K.shape != (3, 3) or pos.ndim != 2 or pos.shape[1] != 3 or quat.shape != (pos.shape[0], 4):
        raise SceneError(f"{json_path}: expected K 3x3, positions Fx3, quaternions Fx4; got {K.shape}, "
                         f"{pos.shape}, {quat.shape}; re-export the metadata")
    if not np.all(np.isfinite(K)):
        raise SceneError(f"{json_path}: camera.K holds NaN or inf; re-export the metadata")
    for what, arr in (("position", pos), ("quaternion", quat)):
        bad = np.flatnonzero(~np.all(np.isfinite(arr), axis=1))
        if bad.size:
            raise SceneError(f"{json_path}: camera {what} of frame {int(bad[0])} holds NaN or inf ({bad.size} such "
                             f"frames); re-export the metadata or drop those frames")
    zero = np.flatnonzero(np.linalg.norm(quat, axis=1) < 1e-8)
    if zero.size:
        raise SceneError(f"{json_path}: camera quaternion of frame {int(zero[0])} is zero, not a rotation "
                         f"({zero.size} such frames); re-export the metadata or drop those frames")
    return K, pos, quat


def read_messy(path: str, *, seg_dir: Optional[str] = None, sem_dir: Optional[str] = None,
               eval: bool = False, allow_missing_masks: bool = False) -> SceneInfo:
    """Read a Messy-Rooms scene. Defaults: ``seg_dir="detic_instance"``, ``sem_dir="detic_semantic"``.

    Without ``detic_semantic`` (or with ``sem_dir=""``) the fg/bg target is derived from the instance
    masks (``SceneInfo.semantic_from_instances``): the same two classes, learnt from id > 0 vs 0.
    Split: frames in name order, train = first ``floor(0.8 F)`` (at least one), test = the rest.
    Initial points from ``depth/`` (uint16 mm PNG or metres .npy) of train views, else None.
    """
    color_dir = os.path.join(path, "color")
    require_dir(color_dir, "colour folder", "a Messy-Rooms scene needs color/<name>.png")
    json_path = os.path.join(path, "metadata.json")
    K_norm, pos, quat = read_metadata(json_path)
    colors = FileIndex(color_dir, IMAGE_EXTS)
    names = sort_names(colors.stems())
    if not names:
        raise SceneError(f"{color_dir}: no colour images (.png/.jpg); add the views")
    if len(names) != pos.shape[0]:
        raise SceneError(f"{json_path}: {pos.shape[0]} camera poses for {len(names)} images in {color_dir}; "
                         f"every colour image needs exactly one pose")

    views: list[View] = []
    ref_wh: Optional[tuple[int, int]] = None
    for i, n in enumerate(names):
        img = colors.find(n)
        W, H = checked_size(img)
        if ref_wh is None:
            ref_wh = (W, H)
        elif not same_aspect((W, H), ref_wh):
            raise SceneError(f"{img}: colour image is {W}x{H} but the first view is {ref_wh[0]}x{ref_wh[1]} "
                             f"(other aspect ratio); all views must share one camera")
        K = np.abs(K_norm * np.array([[W], [H], [1.0]]))  # rows 0, 1 scaled to pixels
        K[0, 2] += 0.5  # data convention -> pixel-centre convention
        K[1, 2] += 0.5
        K[2] = (0.0, 0.0, 1.0)
        c2w = np.eye(4)
        c2w[:3, :3] = quat_wxyz_to_rotmat(quat[i])
        c2w[:3, 3] = pos[i]
        w2c = c2w_to_world_view(c2w @ BLENDER_TO_CV, f"{json_path} frame {i}")
        views.append(View(n, n, img, K, w2c, W, H))

    sources = prediction_and_gt_sources(path, seg_dir, sem_dir, default_seg=DEFAULT_SEG_DIR,
                                        default_sem=DEFAULT_SEM_DIR, gt_sem="semantic", gt_inst="instance")
    seg_folder, sem_folder, conf_folder = (src.folder for src in sources[:3])
    frames, n_resize = build_frames(views, sources, allow_missing_masks)
    n_train = max(1, int(len(frames) * TRAIN_FRACTION))
    train, test = frames[:n_train], frames[n_train:]

    points = cols = None
    depth_dir = os.path.join(path, "depth")
    if os.path.isdir(depth_dir):
        points, cols = points_from_depth(views[:n_train], FileIndex(depth_dir, (".png", ".npy")))
    return assemble(
        "messy", path, train, test, points=points, colors=cols, bbox=None, eval=eval,
        **(fgbg_from_instances() if seg_folder and not sem_folder else
           {"num_classes": NUM_CLASSES, "thing_classes": THING_CLASSES, "class_names": CLASS_NAMES}),
        seg_dir=folder_label(path, seg_folder), sem_dir=folder_label(path, sem_folder),
        extras={"labels_to_resize": n_resize, "points_source": "depth" if points is not None else None,
                "confidence_dir": folder_label(path, conf_folder)})
