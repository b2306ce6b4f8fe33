"""NeRF-synthetic / Blender scenes: ``transforms_train.json`` + ``transforms_test.json``.

Convention: ``transform_matrix`` is camera-to-world in OpenGL/Blender axes (x right, y up,
z backward); OpenCV c2w = c2w_gl @ diag(1, -1, -1, 1). Blender renders with the principal
point at the exact image centre, which in gsplat's pixel-centre convention is
(cx, cy) = (W / 2, H / 2); fx = fy = (W / 2) / tan(camera_angle_x / 2).
``transforms_val.json`` is ignored.
"""
from __future__ import annotations

import json
import math
import os
from typing import Optional

import numpy as np
from PIL import Image

from scene.cameras import SceneError, SceneInfo
from scene.readers.common import (
    IMAGE_EXTS, LABEL_EXTS, LabelSource, View, assemble, build_frames, c2w_to_world_view,
    check_unique_names, checked_size, folder_label, label_classes, resolve_folder, stem_to_name,
)

GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
# No point cloud in this format: 3DGS initialises randomly in this fixed box, which holds the
# NeRF-synthetic objects (cameras sit on a sphere of radius ~4 around them). A box from the
# camera positions would be ~6x too large and waste most random points on empty space.
BLENDER_BOX = 1.3


def _load_transforms(path: str) -> dict:
    try:
        with open(path, "r", encoding="utf-8") as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise SceneError(f"{path}: invalid JSON ({e.msg} at line {e.lineno}); fix or re-export the file") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise SceneError(f"{path}: no 'frames' list; expected NeRF-synthetic transforms JSON (re-export it)")
    if not isinstance(meta.get("camera_angle_x"), (int, float)) or not 0 < meta["camera_angle_x"] < math.pi:
        raise SceneError(f"{path}: 'camera_angle_x' missing or not an angle in (0, pi) radians; add the "
                         f"horizontal field of view")
    return meta


def _resolve_image(scene: str, file_path: str, json_path: str) -> tuple[str, str]:
    """Absolute image path and its scene-relative stem for a ``file_path`` (extension optional)."""
    rel = file_path.replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    base = os.path.join(scene, rel)
    root, ext = os.path.splitext(rel)
    if ext.lower() in IMAGE_EXTS and os.path.isfile(base):
        return base, root
    for e in (".png",) + tuple(x for x in IMAGE_EXTS if x != ".png"):
        if os.path.isfile(base + e):
            return base + e, rel
    missing = base if ext.lower() in IMAGE_EXTS else base + ".png"
    raise SceneError(f"{missing}: image listed in {json_path} not found; restore it or remove the frame")


def _views_of(scene: str, json_path: str) -> list[View]:
    meta = _load_transforms(json_path)
    angle = float(meta["camera_angle_x"])
    views = []
    for i, fr in enumerate(meta["frames"]):
        if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
            raise SceneError(f"{json_path}: frame {i} lacks 'file_path' or 'transform_matrix'; add them or "
                              f"remove the frame")
        img_path, rel_stem = _resolve_image(scene, str(fr["file_path"]), json_path)
        try:
            c2w_gl = np.array(fr["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError):
            raise SceneError(f"{json_path}: frame {i} transform_matrix is not numeric; write it as a 4x4 list "
                              f"of numbers (camera-to-world) or remove the frame") from None
        if c2w_gl.shape != (4, 4) or not np.all(np.isfinite(c2w_gl)):
            what = "holds NaN or inf" if c2w_gl.shape == (4, 4) else f"is {'x'.join(map(str, c2w_gl.shape))}, not 4x4"
            raise SceneError(f"{json_path}: frame {i} transform_matrix {what}; fix that pose (re-export the "
                             f"scene) or remove the frame")
        W, H = checked_size(img_path)
        f = 0.5 * W / math.tan(0.5 * angle)
        K = np.array([[f, 0.0, 0.5 * W], [0.0, f, 0.5 * H], [0.0, 0.0, 1.0]])
        w2c = c2w_to_world_view(c2w_gl @ GL_TO_CV, f"{json_path} frame {i}")
        views.append(View(stem_to_name(rel_stem), rel_stem, img_path, K, w2c, W, H))
    return views


def read_blender(path: str, *, seg_dir: Optional[str] = None, sem_dir: Optional[str] = None,
                 eval: bool = False, allow_missing_masks: bool = False) -> SceneInfo:
    """Read a NeRF-synthetic scene. Train = transforms_train.json, test = transforms_test.json.

    Camera names are the image paths relative to the scene joined with ``_`` (``train_r_0``),
    since train and test reuse stems. Masks: ``SCENE/<seg_dir>/<relative path>.png`` mirroring
    the image tree (``<seg_dir>/train/r_0.png``), or flat ``<seg_dir>/<name>.png``.
    No point cloud: ``points=None`` and ``bbox = [-1.3, 1.3]^3``.
    """
    train_json = os.path.join(path, "transforms_train.json")
    test_json = os.path.join(path, "transforms_test.json")
    train_views = _views_of(path, train_json)
    test_views = _views_of(path, test_json) if os.path.isfile(test_json) else []
    check_unique_names(train_views + test_views, path)
    sources = [
        LabelSource("instance_path", resolve_folder(path, seg_dir, None, "instance mask", "--seg_dir"),
                    LABEL_EXTS, "instance mask", True),
        LabelSource("semantic_path", resolve_folder(path, sem_dir, None, "semantic mask", "--sem_dir"),
                    LABEL_EXTS, "semantic mask", True),
    ]
    train, n1 = build_frames(train_views, sources, allow_missing_masks)
    test, n2 = build_frames(test_views, sources, allow_missing_masks, uid_offset=len(train))
    has_alpha = False
    if train_views:
        with Image.open(train_views[0].image_path) as im:
            has_alpha = im.mode in ("RGBA", "LA")
    box = (np.full(3, -BLENDER_BOX, np.float32), np.full(3, BLENDER_BOX, np.float32))
    return assemble(
        "blender", path, train, test, points=None, colors=None, bbox=box, eval=eval,
        **label_classes(sources[0].folder, sources[1].folder, train + test),
        seg_dir=folder_label(path, sources[0].folder), sem_dir=folder_label(path, sources[1].folder),
        extras={"labels_to_resize": n1 + n2, "has_alpha": has_alpha})
