"""Small helpers: atomic writes, seeding, learning-rate schedules, device choice."""
from __future__ import annotations

import os
import random
import tempfile
from typing import List

import numpy as np
import torch


TMP_PREFIX = ".tmp-"  # every atomic write goes through a file named like this in the target folder


def fsync_dir(folder: str) -> None:
    """Makes a rename in ``folder`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str, write, suffix: str) -> None:
    """``write(file object)`` into a temporary file next to ``path``, fsync it, rename it over ``path``,
    fsync the folder: a crash at any point leaves either the old file or the new one (and at worst a
    ``.tmp-*`` file, which ``remove_stale_tmp`` clears at the next start)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX, suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(folder)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    _atomic_write(path, lambda f: f.write(data), ".tmp")


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save`` through a fsynced temporary file and ``os.replace``."""
    _atomic_write(path, lambda f: torch.save(obj, f), ".pth")


def remove_stale_tmp(folder: str) -> List[str]:
    """Deletes the ``.tmp-*`` files a killed atomic write left in ``folder`` and its subfolders.
    Call it only while holding the folder's lock (no other writer is running). Returns what it removed."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for root, _, files in os.walk(folder):
        for name in files:
            if name.startswith(TMP_PREFIX):
                p = os.path.join(root, name)
                try:
                    os.remove(p)
                    removed.append(p)
                except FileNotFoundError:
                    pass
    return removed


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from scene.cameras import SceneError  # one-line, exit-2 error in every CLI

    try:
        device = torch.device(name)
    except RuntimeError:
        raise SceneError(f"--device {name}: not a device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SceneError(f"--device {name}: no CUDA GPU is visible to torch; use --device cpu (or auto)")
    if device.type not in ("cpu", "cuda"):
        raise SceneError(f"--device {name}: not supported; use auto, cpu or cuda")
    return device


def exponential_lr(step: int, lr_init: float, lr_final: float, max_steps: int,
                   delay_steps: int = 0, delay_mult: float = 1.0) -> float:
    """Log-linear decay from ``lr_init`` to ``lr_final`` over ``max_steps``, with 3DGS's optional
    cosine warm-up scaled by ``delay_mult`` over ``delay_steps``."""
    if step < 0 or (lr_init == 0.0 and lr_final == 0.0):
        return 0.0
    if delay_steps > 0:
        delay = delay_mult + (1 - delay_mult) * np.sin(0.5 * np.pi * np.clip(step / delay_steps, 0, 1))
    else:
        delay = 1.0
    t = np.clip(step / max_steps, 0, 1)
    return float(delay * np.exp(np.log(lr_init) * (1 - t) + np.log(lr_final) * t))
