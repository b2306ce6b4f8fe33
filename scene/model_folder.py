"""A trained model folder (``-m``): which iterations are saved, and loading one of them.

Shared by render.py, metrics.py and tools/ so that no command-line script imports another.
"""
from __future__ import annotations

import os
import re

from scene.cameras import SceneError


CFG_KEYS = ("source_path", "seg_dir", "sem_dir", "eval")  # what reading a model's scene needs


def require_model(model_path: str, needs: tuple = ()):
    """The model's cfg_args (``argparse.Namespace``) after checking that ``model_path`` is a trained
    model folder: it exists and holds a ``cfg_args`` that parses and has ``CFG_KEYS`` and ``needs``.
    Every failure is a one-line SceneError (``<file>: <what is wrong>; <what to do>``); the saved
    iterations are checked by ``find_iteration``."""
    from arguments import load_cfg_args

    if not os.path.isdir(model_path):
        what = "is a file, not a model folder" if os.path.exists(model_path) else "no such model folder"
        raise SceneError(f"{model_path}: {what}; pass the folder train.py -m wrote")
    cfg_path = os.path.join(model_path, "cfg_args")
    if not os.path.isfile(cfg_path):
        raise SceneError(f"{cfg_path}: missing, so {model_path} is not a trained model folder; pass the "
                         f"folder train.py -m wrote (or train first)")
    try:
        cfg = load_cfg_args(model_path)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        msg = " ".join(str(e).split())
        raise SceneError(msg if msg.startswith(cfg_path) else f"{cfg_path}: unreadable cfg_args ({msg}); "
                         f"retrain or restore the file") from None
    missing = [k for k in (*CFG_KEYS, *needs) if not hasattr(cfg, k)]
    if missing:
        raise SceneError(f"{cfg_path}: cfg_args lacks {', '.join(missing)} (written by another version, or "
                         f"edited?); retrain, or add the missing keys to the file")
    return cfg


def find_iteration(model_path: str, iteration: int = -1) -> int:
    folder = os.path.join(model_path, "point_cloud")
    found = sorted(int(m.group(1)) for d in (os.listdir(folder) if os.path.isdir(folder) else [])
                   if (m := re.fullmatch(r"iteration_(\d+)", d)))
    if not found:
        raise SceneError(f"{folder}: no saved iterations, so {model_path} holds no trained model; train "
                         f"first (train.py -m {model_path}) or pass another folder")
    if iteration == -1:
        return found[-1]
    if iteration not in found:
        raise SceneError(f"{folder}/iteration_{iteration}: not saved; pick one of {', '.join(map(str, found))} "
                         f"with --iteration (or -1 for the latest)")
    return iteration


def load_model(model_path: str, iteration: int, device):
    from scene.gaussian_model import GaussianModel
    from utils.ply import PlyError

    path = os.path.join(model_path, "point_cloud", f"iteration_{iteration}", "point_cloud.ply")
    try:
        return GaussianModel.load_ply(path, device=device)
    except PlyError as e:
        msg = " ".join(str(e).split())
        raise SceneError(msg if ";" in msg else f"{msg}; retrain, or restore the file from a backup") from None
