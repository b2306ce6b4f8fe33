"""Scene format detection and dispatch: ``read_scene(path)`` -> :class:`SceneInfo`.

Formats (DATA.md): "colmap" (``sparse/``), "blender" (``transforms_train.json``),
"panopli" (``color/`` + ``pose/``), "messy" (``color/`` + ``metadata.json``).

Splits: PanopLi (splits.json) and Messy-Rooms (the last 20 %) always hold out their own test
views, since every published number is computed on them. COLMAP and Blender follow 3DGS: without
``eval`` every view trains (``test`` is empty); with ``eval`` COLMAP holds out every 8th image
by name and Blender uses transforms_test.json.
"""
from __future__ import annotations

import os
from typing import Optional

from scene.cameras import SceneError, SceneInfo
from scene.readers.blender import read_blender
from scene.readers.colmap import read_colmap
from scene.readers.messy import read_messy
from scene.readers.panopli import read_panopli

SPLIT_ALWAYS = ("panopli", "messy")  # formats whose published split is always used
READERS = {"colmap": read_colmap, "blender": read_blender, "panopli": read_panopli, "messy": read_messy}


def detect_format(path) -> str:
    """``"colmap" | "blender" | "panopli" | "messy"`` from what ``path`` holds; SceneError if none."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise SceneError(f"{path}: scene path does not exist; pass the scene folder with -s")
    if not os.path.isdir(path):
        raise SceneError(f"{path}: scene path is a file, not a folder; pass the scene folder with -s")
    has = lambda *p: os.path.exists(os.path.join(path, *p))  # noqa: E731
    if has("transforms_train.json"):
        return "blender"
    if has("color") and has("metadata.json"):
        return "messy"
    if has("color") and (has("pose") or has("intrinsic")):
        return "panopli"
    if has("sparse"):
        return "colmap"
    if has("images"):
        raise SceneError(f"{os.path.join(path, 'sparse', '0')}: COLMAP scene without a sparse model; run "
                         f"COLMAP (or convert.py) so SCENE/sparse/0 holds cameras/images/points3D")
    if has("color"):
        raise SceneError(f"{path}: color/ found but neither pose/ (PanopLi) nor metadata.json (Messy-Rooms); "
                         f"add the camera files")
    entries = [e for e in os.listdir(path) if not e.startswith(".")]
    if not entries:
        raise SceneError(f"{path}: scene folder is empty; point -s at a COLMAP, Blender, PanopLi or "
                         f"Messy-Rooms scene")
    raise SceneError(f"{path}: no known scene format (looked for sparse/, transforms_train.json, "
                     f"color/+pose/, color/+metadata.json); see docs DATA.md")


def read_scene(path: str, *, seg_dir: Optional[str] = None, sem_dir: Optional[str] = None, eval: bool = False,
               allow_missing_masks: bool = False) -> SceneInfo:
    """Read any supported scene.

    ``seg_dir`` / ``sem_dir``: label subfolders; ``None`` = the format's default (PanopLi
    ``m2f_instance`` / ``m2f_semantics``, Messy-Rooms ``detic_instance`` / ``detic_semantic``,
    none for COLMAP and Blender), ``""`` = no masks. An explicitly named folder must exist.
    ``allow_missing_masks``: a view without a mask gets ``instance_path=None`` instead of an error.
    """
    fmt = detect_format(path)
    eval = eval or fmt in SPLIT_ALWAYS
    return READERS[fmt](os.fspath(path), seg_dir=seg_dir, sem_dir=sem_dir, eval=eval,
                        allow_missing_masks=allow_missing_masks)


def read_scene_for(cfg, allow_missing_masks: bool = False) -> SceneInfo:
    """Reads the scene a run names (``cfg``: parsed flags or a model's ``cfg_args``);
    ``--seg_dir none`` trains plain 3DGS on a scene that has masks."""
    plain = isinstance(cfg.seg_dir, str) and cfg.seg_dir.lower() in ("none", "")
    return read_scene(cfg.source_path, seg_dir="" if plain else cfg.seg_dir, sem_dir="" if plain else cfg.sem_dir,
                      eval=cfg.eval, allow_missing_masks=allow_missing_masks)
