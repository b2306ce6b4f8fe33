"""Evaluation during training: L1 and PSNR of rendered views, read back once per split."""
from __future__ import annotations

from typing import Dict, Sequence

import torch

from gaussian_renderer import render
from utils.loss_utils import l1_loss, psnr


@torch.no_grad()
def evaluate_views(model, views: Sequence, bg: torch.Tensor, *, backend: str = "auto") -> Dict[str, float]:
    """Mean L1 and PSNR over ``views`` (each ``scene.View``), ``{}`` when there is none."""
    if not views:
        return {}
    l1s, psnrs = [], []
    for view in views:
        img = render(view.render_camera, model, bg=bg, backend=backend).rgb.clamp(0, 1)
        gt = view.image_float(model.device)
        l1s.append(l1_loss(img, gt))
        psnrs.append(psnr(img, gt))
    l1, ps = torch.stack([torch.stack(l1s).mean(), torch.stack(psnrs).mean()]).tolist()
    return {"l1": l1, "psnr": ps}
