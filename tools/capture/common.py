"""Shared bits of the capture tools: the one-line error, image listing, atomic writes."""
from __future__ import annotations

import os
import tempfile
from typing import List

import numpy as np
from PIL import Image

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class CaptureError(Exception):
    """A bad input or a failed stage: its message is the one line the user sees (exit 2)."""


def list_images(folder: str) -> List[str]:
    """Names of the image files directly in ``folder``, sorted (no subfolders)."""
    if not os.path.isdir(folder):
        raise CaptureError(f"{folder}: no such folder; pass the folder that holds your photos")
    names = sorted(n for n in os.listdir(folder)
                   if n.lower().endswith(IMAGE_EXTS) and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise CaptureError(f"{folder}: holds no images ({', '.join(IMAGE_EXTS)}); pass the folder of your photos")
    return names


def check_images(folder: str, names: List[str]) -> tuple:
    """Opens every image header; -> (width, height) of the first. Unreadable files are named."""
    size = None
    for n in names:
        path = os.path.join(folder, n)
        try:
            with Image.open(path) as im:
                im.verify()
            with Image.open(path) as im:
                s = im.size
        except Exception as e:  # PIL raises many types for broken files
            raise CaptureError(f"{path}: not a readable image ({type(e).__name__}); remove or replace it") from None
        size = size or s
    return size


def atomic_save_png(path: str, arr: np.ndarray) -> None:
    """Writes ``arr`` (uint8 or uint16, [H, W] or [H, W, 3]) as PNG via a temporary file + rename."""
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".png", dir=d)
    os.close(fd)
    try:
        Image.fromarray(arr).save(tmp, format="PNG", compress_level=6)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save_jpeg(path: str, rgb: np.ndarray, quality: int = 95) -> None:
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".jpg", dir=d)
    os.close(fd)
    try:
        Image.fromarray(rgb).save(tmp, format="JPEG", quality=quality)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
