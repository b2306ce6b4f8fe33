"""Per-Gaussian display colours of the viewer's colour modes, and the highlight of a picked object.

Convention: colours are float32 [N, 3] in [0, 1]; ids are object ids (0 = stuff) as
``tools.objects`` uses them; classes are semantic class ids (0 = void in PanopLi scenes).

- ``rgb``: the view-independent colour, the SH DC term (``0.5 + C0 * sh0``, what the rasterizer
  shows seen head-on without the higher bands); viser's splats take one colour per Gaussian.
- ``instance``: the object's overlay colour (``segmentation.decode.colorize_ids``, the colour of
  the id in ``render.py``'s ``overlay/`` PNGs and ``tools/objects.py list``); stuff (id 0) is a
  dimmed grey of its RGB so objects stand out.
- ``semantic``: the class colours of the scene contact sheet (``tools.contact_sheet.colorize_classes``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

__all__ = ["MODES", "rgb_from_sh0", "instance_colours", "semantic_colours", "mode_colours", "highlight"]

MODES = ("RGB", "Instance", "Semantic")
SH_C0 = 0.28209479177387814
STUFF_GREY = 0.45  # instance mode: stuff is its RGB's grey times this
FADE = 0.25  # highlight: opacity factor of the Gaussians outside the picked object
FADE_GREY = 0.6  # highlight: how far the others' colour moves to its grey


def rgb_from_sh0(sh0: Tensor) -> np.ndarray:
    """[N, 3] float32 in [0, 1] from the DC SH coefficients [N, 1, 3] or [N, 3]."""
    dc = sh0.detach().reshape(sh0.shape[0], 3).float().cpu()
    return (0.5 + SH_C0 * dc).clamp(0.0, 1.0).numpy()


def instance_colours(ids: Tensor, rgb: np.ndarray) -> np.ndarray:
    """[N, 3] float32: ``colorize_ids(id) / 255`` for object Gaussians, a dim grey of ``rgb`` for stuff."""
    from segmentation.decode import colorize_ids

    ids = torch.as_tensor(ids).reshape(-1).to(torch.int64)
    col = colorize_ids(ids).numpy().astype(np.float32) / 255.0  # [N, 3]
    grey = np.repeat(rgb.mean(axis=1, keepdims=True) * STUFF_GREY, 3, axis=1).astype(np.float32)
    return np.where((ids > 0).numpy()[:, None], col, grey)


def semantic_colours(classes: Tensor) -> np.ndarray:
    """[N, 3] float32: the contact sheet's colour of each Gaussian's class (class 0, void: black)."""
    from tools.contact_sheet import colorize_classes

    cls = torch.as_tensor(classes).reshape(-1).to(torch.int64).clamp_min(0).numpy()
    return colorize_classes(cls).astype(np.float32) / 255.0


def mode_colours(mode: str, rgb: np.ndarray, ids: Optional[Tensor], classes: Optional[Tensor]) -> np.ndarray:
    """[N, 3] colours of ``mode`` (one of ``MODES``); falls back to RGB when the labels are missing."""
    if mode == "Instance" and ids is not None:
        return instance_colours(ids, rgb)
    if mode == "Semantic" and classes is not None:
        return semantic_colours(classes)
    if mode not in MODES:
        raise ValueError(f"unknown colour mode {mode!r}; expected one of {MODES}")
    return rgb


def highlight(colours: np.ndarray, opacities: np.ndarray, picked: np.ndarray) -> tuple:
    """Fade everything but the picked Gaussians: others lose ``FADE_GREY`` of their saturation and keep
    ``FADE`` of their opacity. colours [N, 3], opacities [N], picked [N] bool -> (colours, opacities)."""
    grey = colours.mean(axis=1, keepdims=True)
    faded = colours + FADE_GREY * (grey - colours)
    out_c = np.where(picked[:, None], colours, faded).astype(np.float32)
    out_o = np.where(picked, opacities, opacities * FADE).astype(np.float32)
    return out_c, out_o
