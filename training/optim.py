"""Optimisers of the per-Gaussian parameters (one per parameter, as gsplat's strategies need) and
the 3DGS learning-rate schedule.

``--optimizer``:
  * ``adam``: ``torch.optim.Adam`` (for-each implementation); the CPU default, exact on resume.
  * ``fused``: ``torch.optim.Adam(fused=True)``, one kernel per parameter; the CUDA default.
    gsplat's densification ops replace a parameter and carry its state over (skipping the
    ``step`` entry, which fused Adam keeps as a device tensor), so it works with them unchanged.
  * ``selective``: gsplat's ``SelectiveAdam`` (CUDA only) for geometry and colour: only Gaussians
    visible in the step's view are updated. It has no bias correction (gsplat issue 604): its
    steps are (1-b1^t)/sqrt(1-b2^t) times Adam's, about 3x for the first few hundred steps and
    still 1.3x at t = 1000 for a Gaussian seen every step; compare quality before adopting it. Feature
    parameters (embedding, semantic) keep fused Adam, since L_3D moves invisible Gaussians too.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import torch
from torch import Tensor

OPTIMIZERS = ("auto", "adam", "fused", "selective")
GEOMETRY_AND_COLOUR = ("means", "scales", "quats", "opacities", "sh0", "shN")


def resolve_optimizer(kind: str, device: torch.device) -> str:
    """``auto`` -> ``fused`` on CUDA, ``adam`` elsewhere; ``fused``/``selective`` need CUDA."""
    if kind not in OPTIMIZERS:
        raise ValueError(f"--optimizer {kind}: must be one of {', '.join(OPTIMIZERS)}")
    if kind == "auto":
        return "fused" if device.type == "cuda" else "adam"
    if kind in ("fused", "selective") and device.type != "cuda":
        raise ValueError(f"--optimizer {kind}: needs a CUDA device; use --optimizer adam on {device.type}")
    return kind


def adam(params: Iterable, kind: str, **kwargs) -> torch.optim.Optimizer:
    """Adam with the implementation ``kind`` asks for (``selective`` -> fused for non-Gaussian params)."""
    return torch.optim.Adam(params, fused=True, **kwargs) if kind in ("fused", "selective") \
        else torch.optim.Adam(params, **kwargs)


def make_gaussian_optimizers(params, lrs: Dict[str, float], kind: str) -> Dict[str, torch.optim.Optimizer]:
    """One optimiser per parameter of ``params`` (a ParameterDict), each with one named group."""
    out = {}
    for name, p in params.items():
        group = [{"params": p, "lr": lrs[name], "name": name}]
        if kind == "selective" and name in GEOMETRY_AND_COLOUR:
            from gsplat.optimizers import SelectiveAdam

            out[name] = SelectiveAdam(group, eps=1e-15, betas=(0.9, 0.999))
        else:
            out[name] = adam(group, kind, eps=1e-15)
    return out


def visibility_from_info(info: dict) -> Optional[Tensor]:
    """[N] bool: Gaussians the rasteriser did not cull (radii > 0 in any camera), or None."""
    radii = info.get("radii")
    if radii is None:
        return None
    vis = radii > 0
    if vis.dim() == 3:  # [C, N, 2]
        vis = vis.all(-1)
    return vis.any(0) if vis.dim() == 2 else vis


def step_all(optimizers: Dict[str, torch.optim.Optimizer], visibility: Optional[Tensor] = None) -> None:
    """Steps and clears every optimiser; SelectiveAdam gets the step's visibility mask."""
    for opt in optimizers.values():
        if visibility is not None and type(opt).__name__ == "SelectiveAdam":
            opt.step(visibility)
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
