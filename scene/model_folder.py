"""A trained model folder (``-m``): which iterations are saved, and loading one of them.

Shared by render.py, metrics.py and tools/ so that no command-line script imports another.
"""
from __future__ import annotations

import os
import re

from scene.cameras import SceneError


def find_iteration(model_path: str, iteration: int = -1) -> int:
    folder = os.path.join(model_path, "point_cloud")
    found = sorted(int(m.group(1)) for d in (os.listdir(folder) if os.path.isdir(folder) else [])
                   if (m := re.fullmatch(r"iteration_(\d+)", d)))
    if not found:
        raise SceneError(f"{folder}: no saved iterations; train first (train.py -m {model_path})")
    if iteration == -1:
        return found[-1]
    if iteration not in found:
        raise SceneError(f"{folder}/iteration_{iteration}: not saved; available: {', '.join(map(str, found))}")
    return iteration


def load_model(model_path: str, iteration: int, device):
    from scene.gaussian_model import GaussianModel
    from utils.ply import PlyError

    path = os.path.join(model_path, "point_cloud", f"iteration_{iteration}", "point_cloud.ply")
    try:
        return GaussianModel.load_ply(path, device=device)
    except PlyError as e:
        raise SceneError(str(e)) from None
